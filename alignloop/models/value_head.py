"""A policy with a value head, for PPO: one backbone, two outputs.

The value head is a linear layer on the policy's last hidden state, so a single forward pass
gives both the next-token logits and V(s_t) for every response position. With LoRA, the
backbone stays frozen and only the adapters and the head learn — the reference model is the
same network with its adapters switched off, so PPO holds one copy of the weights instead of
the four (policy, value, reference, reward) of the original recipe.

The head starts at zero (V = 0 everywhere): the first value targets are then the rewards
themselves and no random head sends noise into the policy's gradient through the shared
backbone before it has learned anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from alignloop.models.saving import save_trained_model
from alignloop.models.forward import response_outputs
from alignloop.ops import token_logp_grid

VALUE_HEAD_FILE = "value_head.safetensors"


class PolicyWithValueHead(torch.nn.Module):
    """`forward(batch, temperature)` -> (logps (R, T-1), mask (R, T-1), logits (N, V), values (R, T-1))."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy
        hidden_size = policy.config.hidden_size
        self.value_head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, batch: dict[str, Any], temperature: float = 1.0):
        logits, targets, hidden = response_outputs(self.policy, batch, with_hidden=True)
        logps, mask, logits = token_logp_grid(logits, targets, batch["labels"], temperature)
        values = self.value_head(hidden.float()).squeeze(-1)  # (N,), in float32 like the returns
        grid = torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)
        return logps, mask, logits, grid


def save_policy_with_value_head(model: PolicyWithValueHead, path: str | Path, *, tokenizer=None,
                                merged: bool = False) -> Path:
    """The policy as `save_trained_model` writes it (usable by every later stage), plus the head."""
    path = save_trained_model(model.policy, path, tokenizer=tokenizer, merged=merged)
    head = {name: p.detach().cpu().contiguous() for name, p in model.value_head.state_dict().items()}
    save_file(head, str(path / VALUE_HEAD_FILE))
    return path


def load_value_head(model: PolicyWithValueHead, path: str | Path) -> None:
    model.value_head.load_state_dict(load_file(str(Path(path) / VALUE_HEAD_FILE)))


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Every dropout of `model` set to 0 (dropout layers and attention's functional dropout).

    RL needs it: with dropout on, the log-probs of the same tokens differ between the rollout
    and the update, so the PPO ratio is not 1 before any update and the KL to the reference is
    noise (Huang et al. 2024, "The N+ implementation details of RLHF with PPO").
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    config = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)
    return model
