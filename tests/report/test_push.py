"""`alignloop push`: one commit to a hub, against a local fake of the Hub's HTTP API (a real
uvicorn server speaking the endpoints huggingface_hub's create_repo and upload_folder call)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from alignloop.report.push import PushError, model_run_of, push_run


@pytest.fixture()
def fake_hub():
    """(endpoint URL, {repo: {path: bytes}}, [requests seen]) of a hub that accepts every upload
    as regular (inline) files; anything else it answers 404, as a real hub would a wrong call."""
    app, repos, seen = FastAPI(), {}, []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def hub(path: str, request: Request):
        body = await request.body()
        seen.append((request.method, path, request.headers.get("authorization")))
        if path == "api/repos/create":
            data = json.loads(body)
            repos.setdefault(f"{data['organization']}/{data['name']}", {})
            return {"url": f"{endpoint}/{data['organization']}/{data['name']}"}
        if path == "api/validate-yaml":
            return {"errors": [], "warnings": []}
        if "/preupload/" in path:
            return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                              for f in json.loads(body)["files"]]}
        if "/commit/" in path:
            repo = path.split("/")[2] + "/" + path.split("/")[3]
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    repos[repo][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return {"commitUrl": f"{endpoint}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40, "success": True}
        return JSONResponse({"error": f"not a hub endpoint: {path}"}, status_code=404)

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield endpoint, repos, seen
    server.should_exit = True
    thread.join(timeout=5)


def make_run(root):
    run = root / "rounds" / "round-1" / "rl"
    (run / "final").mkdir(parents=True)
    (run / "final" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (run / "final" / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
    (run / "final" / "README.md").write_text("---\nlibrary_name: peft\n---\n# card\n")
    (run / "config.yaml").write_text("train: {}\n")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run.parent / "eval.json").write_text("{}")
    return run


def test_push_puts_final_at_the_root_and_the_record_beside(tmp_path, fake_hub):
    endpoint, repos, seen = fake_hub
    run = make_run(tmp_path)
    result = push_run(run, "me/detox", endpoint=endpoint, token="hf_test")
    stored = repos["me/detox"]
    assert sorted(stored) == ["README.md", "adapter_config.json", "adapter_model.safetensors", "alignloop/config.yaml",
                              "alignloop/eval.json", "alignloop/metrics.jsonl"]
    assert stored["adapter_model.safetensors"] == (run / "final" / "adapter_model.safetensors").read_bytes()
    assert result.files == tuple(sorted(stored)) and result.commit_url.endswith("/me/detox/commit/" + "a" * 40)
    assert all(auth == "Bearer hf_test" for _, _, auth in seen)
    # a loop folder pushes its last round's policy
    (tmp_path / "state.json").write_text(json.dumps({"artifacts": {"1": {"policy_adapter": str(run / "final")}}}))
    assert model_run_of(tmp_path) == run


def test_nothing_to_push_and_a_refusing_hub_are_one_line(tmp_path, fake_hub):
    endpoint, _, _ = fake_hub
    with pytest.raises(PushError, match="no final/ folder here"):
        push_run(tmp_path, "me/x", endpoint=endpoint, token="t")
    (tmp_path / "state.json").write_text(json.dumps({"artifacts": {"1": {"reward_model": "x"}}}))
    with pytest.raises(PushError, match="a loop folder with no trained policy yet"):
        model_run_of(tmp_path)
    run = make_run(tmp_path / "other")
    with pytest.raises(PushError, match=r"pushing .*final to 'bad id with spaces' failed: Repo id must use"):
        push_run(run, "bad id with spaces", endpoint=endpoint, token="t")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(PushError, match=r"pushing .*final to 'me/x' failed: "):
        push_run(run, "me/x", endpoint=closed, token="t")


def test_push_command(tmp_path, fake_hub):
    endpoint, repos, _ = fake_hub
    run = make_run(tmp_path)
    done = subprocess.run([sys.executable, "-m", "alignloop", "push", str(run), "--repo", "me/cli-push",
                           "--endpoint", endpoint], capture_output=True, text=True, env={"HF_TOKEN": "hf_cli",
                                                                                        "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "pushed 6 files to" in done.stdout and "README.md" in repos["me/cli-push"]
