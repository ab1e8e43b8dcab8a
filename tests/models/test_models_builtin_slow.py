"""The real built-in model, end to end: convert from GGUF, load from cache quickly, answer."""

from __future__ import annotations

import json
import time

import pytest
import torch

from alignloop.models import builtin_status, load_model_and_tokenizer, prepare_builtin
from alignloop.models.builtin import PROVENANCE_FILE

SMOL = "smollm2-135m-instruct"


@pytest.mark.slow
def test_prepare_load_and_generate_smollm2(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLOOP_HOME", str(tmp_path))
    messages = []
    started = time.perf_counter()
    folder = prepare_builtin(SMOL, log=messages.append)
    conversion_s = time.perf_counter() - started
    assert messages, "a one-time conversion should be announced"
    assert json.loads((folder / PROVENANCE_FILE).read_text())["contents"] == "model and tokenizer"
    assert {row.name: row for row in builtin_status()}[SMOL].ready
    assert prepare_builtin(SMOL, log=pytest.fail) == folder  # second call: nothing to do

    load_model_and_tokenizer(SMOL)  # warm the OS file cache and lazy imports
    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(SMOL)
    cached_load_s = time.perf_counter() - started
    # Timings are printed, not asserted: the machines are shared (benchmarks/ measures speed).
    print(f"\nGGUF conversion: {conversion_s:.1f} s; load from cache: {cached_load_s:.3f} s")
    assert model.dtype == torch.float32 and tokenizer.name_or_path == str(folder)
    # Tied as in SmolLM2: the file holds the embedding once (float32: ~538 MB, not ~651 MB).
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert (folder / "model.safetensors").stat().st_size < 560e6

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    model.eval()
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
