"""Tiny random language models for tests: real tokenizer, toy-sized network, built in milliseconds.

Tests must not download and must run in seconds on a 2-core CPU, yet they should exercise the
same code paths as a real model: the same tokenizer (so chat templates, special tokens and
padding behave as in production) and the same architecture family as the built-in default.
So the network is a Llama (SmolLM2's architecture) with a few dozen hidden units per layer,
sized to the real SmolLM2 vocabulary, with random weights fixed by a seed.

The embedding matrix dominates at this size (49152 x hidden_size), which is why the output
layer is tied to it, as in SmolLM2 itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from alignloop.models.builtin import load_builtin_tokenizer

__all__ = ["TINY_TOKENIZER_MODEL", "build_tiny_causal_lm", "save_tiny_model"]

# The built-in whose tokenizer tiny models use by default.
TINY_TOKENIZER_MODEL = "smollm2-135m-instruct"


def build_tiny_causal_lm(
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    seed: int = 0,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """A random Llama sized to `tokenizer` (default: SmolLM2's), identical for equal seeds."""
    if tokenizer is None:
        tokenizer = load_builtin_tokenizer(TINY_TOKENIZER_MODEL)
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # len() counts added special tokens; .vocab_size does not
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # A private RNG stream: the model depends only on `seed`, and the caller's global
    # random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_tiny_model(path: str | Path, **kwargs: Any) -> Path:
    """Build a tiny model (kwargs as for `build_tiny_causal_lm`) and save it with its tokenizer.

    The folder is an ordinary Hugging Face model folder: `load_model_and_tokenizer(str(path))`
    loads it, as would any transformers code.
    """
    path = Path(path)
    model, tokenizer = build_tiny_causal_lm(**kwargs)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
