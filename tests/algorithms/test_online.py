"""The experience plumbing shared by PPO and GRPO: row selection, update plans, prompts, dropout."""

from __future__ import annotations

import pytest
import torch

from alignloop.algorithms.online import OnlineRL, ScoredRollout, select_rows, update_micro_batches
from alignloop.data.prompts import PromptDataConfig, read_prompts
from alignloop.engine.rollout import rollout_batch
from alignloop.engine.rollout import Rollout
from alignloop.models import build_tiny_causal_lm, disable_dropout
from alignloop.ops import IGNORE_INDEX


def experience(lengths: list[int]) -> dict[str, torch.Tensor]:
    """Right-padded rows of the given lengths; grids hold the row index for checking."""
    width = max(lengths)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    rows = torch.arange(len(lengths)).float()
    return {
        "input_ids": mask * 7,
        "attention_mask": mask,
        "labels": torch.where(mask.bool(), 7, IGNORE_INDEX),
        "advantages": rows.unsqueeze(-1).expand(-1, width - 1).clone(),
        "scores": rows,
    }


def test_select_rows_keeps_the_rows_and_trims_the_padding():
    batch = experience([3, 6, 2, 4])
    picked = select_rows(batch, [2, 0])
    assert picked["input_ids"].shape == (2, 3)  # the longest selected row has 3 tokens
    assert picked["advantages"].shape == (2, 2)  # grids are one shorter
    assert picked["scores"].tolist() == [2.0, 0.0]
    assert picked["advantages"][:, 0].tolist() == [2.0, 0.0]


def test_a_rollout_batch_numbers_the_runs_of_rows_with_one_prompt():
    prompts = [[5, 6], [5, 6], [5, 6], [7], [7], [5, 6]]  # a prompt that comes back later is a new run
    rollout = Rollout(prompts, [[1], [2, 3], [4], [1], [2], [3]], [True] * 6, [""] * 6, 1.0)
    batch = rollout_batch(rollout, pad_token_id=0)
    assert batch["prefix_groups"].tolist() == [0, 0, 0, 1, 1, 2]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 2, 3]  # the response only


def test_update_plan_visits_every_row_once_per_epoch():
    torch.manual_seed(0)
    batch = experience([3, 6, 2, 4, 5, 3, 2])
    updates = update_micro_batches(batch, rows_per_micro_batch=2, epochs=3, num_minibatches=2)
    assert len(updates) == 6
    for epoch in range(3):
        seen = [int(r) for update in updates[2 * epoch : 2 * epoch + 2] for micro in update for r in micro["scores"]]
        assert sorted(seen) == list(range(7))
    assert all(len(micro["scores"]) <= 2 for update in updates for micro in update)
    with pytest.raises(ValueError, match="minibatches"):
        update_micro_batches(batch, 2, 1, 8)


def test_disable_dropout_makes_training_mode_deterministic(smol_tokenizer):
    model, _ = build_tiny_causal_lm(smol_tokenizer)
    model.config._attn_implementation = "eager"  # attention dropout as a functional call
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    model.train()
    ids = torch.randint(0, 100, (2, 12))
    assert not torch.equal(model(ids).logits, model(ids).logits)
    disable_dropout(model)
    assert torch.equal(model(ids).logits, model(ids).logits)


def test_overlong_prompts_are_truncated_to_their_last_tokens_or_dropped(smol_tokenizer, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "short"}\n{"prompt": "' + "very " * 40 + 'long"}\n')
    config = PromptDataConfig(train=str(path), max_prompt_length=12, use_chat_template=False)
    kept = read_prompts(str(path), smol_tokenizer, config)
    assert [len(item.prompt_ids) <= 12 for item in kept] == [True, True]
    assert smol_tokenizer.decode(kept[1].prompt_ids).endswith("long")
    dropped = read_prompts(str(path), smol_tokenizer, config.model_copy(update={"overlong_prompts": "drop"}))
    assert [item.prompt for item in dropped] == ["short"]


def test_rollout_metrics_are_sums_over_the_replies_wordless_ones_counted():
    tokens = experience([3, 4, 2])  # responses of 2, 3 and 1 scored tokens (labels on every token)
    rollout = Rollout(prompt_ids=[[7]] * 3, response_ids=[[7, 7], [7, 7, 7], [7]], finished=[True, False, True],
                      texts=["Fine, thanks.", "🌍🌍🌍", "ok"], temperature=1.0)
    scored = ScoredRollout(items=[], rollout=rollout, scores=torch.tensor([1.0, 2.0, -0.5]), tokens=tokens)
    kl = torch.full((3, 3), 0.5)
    metrics = OnlineRL.rollout_metrics(scored, kl)
    assert metrics == {"reward": 2.5, "kl/sequence": 0.5 * (2 + 3 + 1), "completions/mean_length": 6.0,
                       "response/eos_rate": 2.0, "response/wordless_rate": 1.0}
