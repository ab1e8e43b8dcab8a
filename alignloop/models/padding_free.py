"""Padding-free forward passes: a padded (B, T) batch runs as one row of its N real tokens.

The linear layers, most of a transformer's work, then see N tokens instead of B × T. Batches of
chosen and rejected replies carry much padding (benchmarks/train_vs_trl.py: 16 rows of 52 to
117 tokens, 28 % of the batch). Attention runs within each sequence (`segment_attention` in
alignloop/models/attention.py, given the boundaries as `cu_seq_lens_q` like flash-attention's
varlen kernels), and the hidden states come back in the batch's padded layout, zeros at the
padding, so the losses that read them do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignloop.models.attention import AUTO_ATTENTION, SEGMENTS_GIVEN, grid_slots, to_grid


@dataclass(frozen=True)
class Unpadded:
    """Where the real tokens of a (B, T) batch are, and their sequence boundaries in one row."""

    real: torch.Tensor  # (B, T) bool
    cu_seq_lens: torch.Tensor  # (B + 1,) int32: row b holds flat positions cu[b] .. cu[b+1]-1
    max_length: int  # the longest row's real tokens

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> Unpadded:
        real = attention_mask.bool()
        lengths = real.sum(-1)
        cu_seq_lens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        return cls(real, cu_seq_lens, int(lengths.max()))

    def model_inputs(self, input_ids: torch.Tensor) -> dict:
        """One (1, N) row of the real tokens, positions restarting at 0 for each sequence."""
        positions = positions_from_mask(self.real)[self.real]
        return {"input_ids": input_ids[self.real][None], "position_ids": positions[None],
                "cu_seq_lens_q": self.cu_seq_lens, "cu_seq_lens_k": self.cu_seq_lens,
                "max_length_q": self.max_length, "max_length_k": self.max_length}

    def repad(self, flat: torch.Tensor) -> torch.Tensor:
        """(1, N, ...) values of the real tokens -> (B, T, ...), zeros at the padding."""
        return to_grid(flat[0], grid_slots(self.real), self.real.shape)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B, T) position ids counting real tokens from 0, whatever the padding side."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def supports_padding_free(model: torch.nn.Module) -> bool:
    """Only alignloop's attention is given the sequence boundaries; a sliding window would need
    them too. `model.padding_free: false` (ModelConfig) turns it off."""
    inner = getattr(model, "module", model)  # DDP wraps the model in `.module`
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    config = inner.config
    sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    wanted = getattr(inner, "alignloop_padding_free", True)
    return wanted and config._attn_implementation == AUTO_ATTENTION and not sliding


def last_hidden_states(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T, H) hidden states after the final norm.

    A batch with padding runs padding-free when the model's attention supports it; rows are
    then independent sequences whose positions count their real tokens from 0 (what
    `positions_from_mask` gives the padded forward, for left and right padding alike).
    """
    padded = attention_mask is not None and not bool(attention_mask.bool().all())
    if not (padded and supports_padding_free(model)):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        return _hidden(model, {k: v for k, v in inputs.items() if v is not None})
    unpadded = Unpadded.of(attention_mask)
    token = SEGMENTS_GIVEN.set(True)
    try:
        hidden = _hidden(model, unpadded.model_inputs(input_ids))  # (1, N, H)
    finally:
        SEGMENTS_GIVEN.reset(token)
    return unpadded.repad(hidden)


def _hidden(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The last hidden states, without the LM head where that is allowed.

    A DDP-wrapped model must run its own forward, where DDP prepares the gradient sync; there
    logits_to_keep=1 projects one position. Otherwise the decoder body alone runs (LoRA layers are
    in it), which also saves the bf16 cast of the output layer's weight: about 6 % of a LoRA
    reward-model step of the built-in model on CPU.
    """
    if hasattr(model, "module"):
        return model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder()(**inputs, use_cache=False).last_hidden_state
