"""Fixtures for the model tests (`tiny_model_dir` and `smol_tokenizer` come from tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def prompt_batch(smol_tokenizer):
    """Two prompts of different lengths, padded: exercises the attention mask too."""
    texts = ["The capital of France is", "Hello"]
    return smol_tokenizer(texts, return_tensors="pt", padding=True)


def _logits_in_eval_mode(model: torch.nn.Module, batch) -> torch.Tensor:
    model.eval()  # no dropout: equal weights must give equal logits
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.fixture()
def logits_of():
    """`logits_of(model, batch)`: a fixture, since test modules cannot import a conftest reliably."""
    return _logits_in_eval_mode
