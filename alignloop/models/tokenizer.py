"""Tokenizer fix-ups that every loading path shares (built-in, local folder, hub).

Batching needs a pad token, and many causal LM tokenizers ship without one. The usual
remedy, used here, is to pad with the end-of-sequence token: padded positions are masked out
by the attention mask and the loss mask, so which id fills them does not matter. Note that
then `pad_token_id == eos_token_id`, so code that builds loss masks must use the attention
mask, never `input_ids != pad_token_id` (that would also hide the real end-of-turn token).

The chat template is left exactly as the tokenizer ships it: prompts must be formatted the
way the model was trained to read them.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

__all__ = ["ensure_pad_token", "load_tokenizer_folder"]


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give `tokenizer` a pad token (its eos token) if it has none; returns the same object."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"tokenizer {tokenizer.name_or_path!r} has neither a pad token nor an eos token "
                "to pad with; set tokenizer.pad_token before batching"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer_folder(folder: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved with `save_pretrained` from a local folder (never the network)."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return ensure_pad_token(tokenizer)
