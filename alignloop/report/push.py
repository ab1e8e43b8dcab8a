"""`alignloop push RUN_DIR --repo ID`: put a trained model on the Hugging Face Hub, ready to load.

The repository's root is the run's `final/` folder (adapter or full model, tokenizer, and the
model card that the trainer wrote), so `from_pretrained(ID)` loads it as it is; the run's record
(`config.yaml`, `run_info.json`, `metrics.jsonl`, and for a loop round its `eval.json`) goes
under `alignloop/`. A loop folder pushes its last round's policy. The upload is
huggingface_hub's `upload_folder` (one commit); the token is huggingface_hub's (`HF_TOKEN` or
`hf auth login`), and `endpoint` (or `HF_ENDPOINT`) points at another hub.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alignloop.errors import UserError

__all__ = ["PushError", "PushResult", "model_run_of", "push_run"]

RECORD_FILES = ("config.yaml", "run_info.json", "metrics.jsonl")


class PushError(ValueError, UserError):
    """A run folder with nothing to push, or a hub that refused the upload."""


@dataclass(frozen=True)
class PushResult:
    repo_url: str
    commit_url: str
    files: tuple[str, ...]


def model_run_of(run_dir: Path) -> Path:
    """The training run whose `final/` to push: `run_dir` itself, or a loop's last round's policy run."""
    if (run_dir / "final").is_dir():
        return run_dir
    state = run_dir / "state.json"
    if state.is_file():
        artifacts = json.loads(state.read_text()).get("artifacts", {})
        rounds = sorted(artifacts, key=int)
        for number in reversed(rounds):
            adapter = artifacts[number].get("policy_adapter")
            if adapter and (Path(adapter) / "adapter_config.json").is_file():
                return Path(adapter).parent
        raise PushError(f"{run_dir}: a loop folder with no trained policy yet (no round finished its RL step)")
    raise PushError(f"{run_dir}: no final/ folder here (a training run's folder, or a loop's, is expected)")


def _staged(model_run: Path, folder: Path) -> list[str]:
    """Copy what goes up into `folder`; return the repo paths."""
    shutil.copytree(model_run / "final", folder, dirs_exist_ok=True)
    record = folder / "alignloop"
    record.mkdir(exist_ok=True)
    for name in RECORD_FILES:
        if (model_run / name).is_file():
            shutil.copy2(model_run / name, record / name)
    evaluation = model_run.parent / "eval.json"
    if evaluation.is_file():
        shutil.copy2(evaluation, record / "eval.json")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def push_run(run_dir: str | Path, repo_id: str, *, private: bool = False, endpoint: str | None = None,
             token: str | None = None, message: str | None = None) -> PushResult:
    """Upload the model of `run_dir` to `repo_id` (created if needed); see the module docstring."""
    # lazy: huggingface_hub loads only to push, not for every report page
    from huggingface_hub import HfApi

    model_run = model_run_of(Path(run_dir))
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory() as scratch:
        files = _staged(model_run, Path(scratch))
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(folder_path=scratch, repo_id=repo_id,
                                       commit_message=message or f"alignloop: {model_run.name}")
        except Exception as error:  # HTTP status, connection, invalid id: huggingface_hub raises many types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PushError(f"pushing {model_run / 'final'} to {repo_id!r} failed: {first_line}") from None
    return PushResult(str(repo), str(commit.commit_url), tuple(files))
