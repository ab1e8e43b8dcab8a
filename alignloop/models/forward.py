"""Forward passes that score responses: logits, log-probs and hidden states of the scored tokens.

Completion-only training scores only response tokens, often half of a chat-formatted sequence or
less. Projecting *every* position onto a 49k-token vocabulary and taking its log-softmax then
costs more than it needs to: `response_logits` runs the backbone, takes the final hidden states,
and applies the output layer to the scored positions only. The tensor arithmetic after the
forward pass (label shifting, log-softmax in slabs, grids) is `alignloop.ops`.
"""

from __future__ import annotations

from typing import Any

import torch

from alignloop.models.padding_free import last_hidden_states
from alignloop.ops import IGNORE_INDEX, selective_log_softmax, shifted_targets, token_logp_grid

# Architectures whose logits are exactly `output_embeddings(last hidden state)`: no logit
# soft-capping (Gemma 2), no logit scaling (Cohere, Granite). Others take the full-logits path.
PLAIN_OUTPUT_LAYER_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2", "phi3", "smollm3", "olmo2"})

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids")


def _base_config(model: torch.nn.Module) -> Any:
    inner = getattr(model, "module", model)  # DDP wraps the model in `.module`
    return getattr(inner, "config", None)


def _output_layer(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)
    return inner.get_output_embeddings()


def has_plain_output_layer(model: torch.nn.Module) -> bool:
    config = _base_config(model)
    return getattr(config, "model_type", None) in PLAIN_OUTPUT_LAYER_MODELS


def response_logits(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, V), targets (N,)) for the N positions whose next token is a scored label."""
    logits, targets, _ = response_outputs(model, batch)
    return logits, targets


def response_outputs(
    model: torch.nn.Module, batch: dict[str, Any], with_hidden: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(logits (N, V), targets (N,), last hidden states (N, H) or None) of the N scored positions.

    The hidden states are what a value head reads (PPO); they come from the same forward pass.
    """
    inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
    targets = shifted_targets(batch["labels"])  # (B, T-1)
    scored = targets != IGNORE_INDEX  # (B, T-1)
    if not has_plain_output_layer(model):
        out = model(**inputs, use_cache=False, output_hidden_states=with_hidden)
        hidden = out.hidden_states[-1][:, :-1][scored] if with_hidden else None
        return out.logits[:, :-1][scored], targets[scored], hidden
    # logits_to_keep=1 keeps the model from projecting every position; the last hidden state
    # (after the final norm) is projected below for the scored positions only.
    # Rows that share a prompt (a pair's chosen and rejected reply) compute it once.
    hidden = last_hidden_states(model, **inputs, prefix_groups=batch.get("prefix_groups"))[:, :-1][scored]  # (N, H)
    return _output_layer(model)(hidden), targets[scored], hidden if with_hidden else None


def response_logps(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each row's scored (response) tokens, and how many there are.

    Returns (logps (R,), token_counts (R,)) for the R rows of the batch; a row with no scored
    token gets 0 and count 0. This is what DPO-style methods compare across policy and reference.
    """
    logits, targets = response_logits(model, batch)  # (N, V), (N,)
    scored = shifted_targets(batch["labels"]) != IGNORE_INDEX  # (R, T-1)
    rows = scored.nonzero(as_tuple=True)[0]  # (N,) row of each scored token, row-major like `logits`
    token_logps = selective_log_softmax(logits, targets)  # (N,)
    num_rows = scored.shape[0]
    sums = torch.zeros(num_rows, dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
    return sums, scored.sum(-1)


def response_token_logps(
    model: torch.nn.Module, batch: dict[str, Any], temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the scored tokens laid out on a grid, for policy-gradient losses.

    Returns (logps (R, T-1) with 0 off the mask, mask (R, T-1) bool, logits (N, V) of the scored
    positions — for an entropy bonus). `temperature` divides the logits as the sampler did, so
    the log-probs belong to the distribution the responses were drawn from.
    """
    logits, targets = response_logits(model, batch)  # (N, V), (N,)
    return token_logp_grid(logits, targets, batch["labels"], temperature)


