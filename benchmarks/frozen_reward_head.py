"""A reward model that trains only its head on a frozen backbone: the measurement behind issue 15's
next step.

    python benchmarks/frozen_reward_head.py runs/demo/rounds/round-1/feedback/*/data.jsonl rm-frozen

The built-in model stays as it is; each ranked reply's mean-pooled response features are
computed once; a linear head learns the rankings with Plackett–Luce (full batch, AdamW). That
costs one forward pass over the replies (each prompt computed once) instead of the demo's LoRA
training: on a 2-core Intel Xeon (AVX-512, no AMX), the whole script takes 42 s for seed 2's 276
replies, model loading included, against 138–246 s for the LoRA reward model's stage. The folder is an ordinary reward-model
folder (`pooling: mean`) whose LoRA adapters are untouched (B = 0, so the backbone is the base
model), so `--resume`d loops, `rm eval` and `benchmarks/reward_agreement.py` take it as it is.

Measured there (2026-12-02): within-prompt agreement with alt-profanity-check on 160 fresh
replies, seed 0's feedback, 0.69 against 0.55 for the demo's LoRA last-token reward model; RLOO
on seed 1's head (the demo's recipe otherwise): 34 % less held-out toxicity at KL 2.65 and no
warning, against 10 % and the reward-hacking warning on its LoRA reward model; on seed 2's: 13 % at KL 3.12,
still with the warning (its LoRA reward model: −3 %). Better, not yet the demo's bar of 50 %.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch

from alignloop.algorithms.reward import RewardConfig
from alignloop.data import collate_rankings, encode_preference_records, read_preference_data
from alignloop.evaluation.reward_evaluation import evaluate_reward_model
from alignloop.losses import plackett_luce
from alignloop.models import build_reward_model, save_reward_model
from alignloop.models.reward_model import response_mask_of

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}  # the demo's, left untrained


def response_features(model, rankings, pad_token_id: int, rankings_per_batch: int = 4) -> torch.Tensor:
    """(N, H) what the head reads for every ranked reply, ranking by ranking (the rows of
    `collate_rankings`); each ranking's prompt is computed once."""
    out = []
    with torch.no_grad():
        for start in range(0, len(rankings), rankings_per_batch):
            batch = collate_rankings(rankings[start : start + rankings_per_batch], pad_token_id)
            out.append(model.features(batch["input_ids"], batch["attention_mask"], batch["prefix_groups"],
                                      response_mask_of(batch)))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("feedback", help="a rankings export (data.jsonl)")
    parser.add_argument("out", type=Path, help="reward-model folder to write")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = RewardConfig.model_validate({
        "model": {"name": "smollm2-135m-instruct", "lora": LORA},
        "data": {"train": [args.feedback], "eval_every_nth": 5, "max_length": 192},  # the loop's split
    })
    model, tokenizer = build_reward_model(config.model, pooling="mean")
    model.requires_grad_(False).eval()
    model.head.requires_grad_(True)
    data = read_preference_data(config.data)
    encode = partial(encode_preference_records, tokenizer, max_length=config.data.max_length,
                     max_prompt_length=config.data.max_prompt_length, use_chat_template=True, on_invalid=config.data.on_invalid)
    (train, _), (held_out, _) = encode(data.train), encode(data.eval)
    features = response_features(model, train.rankings, tokenizer.pad_token_id)
    grid = collate_rankings(train.rankings, tokenizer.pad_token_id)  # slot_index, ranks, ranking_mask
    optimiser = torch.optim.AdamW(model.head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    for _ in range(args.epochs):
        scores = model.score_features(features)  # (N,)
        losses, _ = plackett_luce(scores[grid["slot_index"]], grid["ranks"], mask=grid["ranking_mask"])
        optimiser.zero_grad()
        losses.mean().backward()
        optimiser.step()
    with torch.no_grad():
        scores = model.score_features(features)
    model.set_normalization(float(scores.mean()), float(scores.std()))
    summary = evaluate_reward_model(model, held_out, tokenizer.pad_token_id)
    save_reward_model(model, args.out, tokenizer, extra={"eval": summary, "frozen_backbone": True})
    print(f"{args.out}: {len(train.rankings)} rankings, final loss {losses.mean().item():.3f}; held-out {summary}")


if __name__ == "__main__":
    main()
