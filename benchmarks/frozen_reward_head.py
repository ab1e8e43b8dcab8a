"""A reward model that trains only its head on a frozen backbone: the measurement behind issue 15's
next step.

    python benchmarks/frozen_reward_head.py runs/demo/rounds/round-1/feedback/*/data.jsonl rm-frozen

The built-in model stays as it is; each ranked reply's mean-pooled response features are
computed once; a linear head learns the rankings with Plackett–Luce (full batch, AdamW). That
costs one forward pass over the replies instead of the demo's LoRA training: on a 2-core Intel
Xeon (AVX-512), 52 s for 284 replies against 138–246 s. The folder is an ordinary reward-model
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
from alignloop.data import encode_preference_records, pad_batch, read_preference_data
from alignloop.evaluation.reward_evaluation import evaluate_reward_model
from alignloop.losses import plackett_luce
from alignloop.models import build_reward_model, save_reward_model
from alignloop.models.padding_free import last_hidden_states, positions_from_mask
from alignloop.models.reward_model import mean_over_response, response_mask_of

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}  # the demo's, left untrained


def response_features(backbone, rankings, pad_token_id: int, batch_size: int = 16) -> torch.Tensor:
    """(N, H) mean-pooled response features of every ranked reply, rankings in order."""
    rows = [reply for ranking in rankings for reply in ranking.responses]
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = pad_batch(rows[start : start + batch_size], pad_token_id)
            mask = batch["attention_mask"]
            hidden = last_hidden_states(backbone, batch["input_ids"], mask, positions_from_mask(mask))
            out.append(mean_over_response(hidden, response_mask_of(batch) & mask.bool()))
    return torch.cat(out)


def ranking_grid(rankings, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat scores (N,) -> (B, K) scores, ranks and mask, as `plackett_luce` takes them."""
    width = max(len(ranking.responses) for ranking in rankings)
    rows, ranks = [], torch.zeros(len(rankings), width, dtype=torch.long)
    mask = torch.zeros(len(rankings), width, dtype=torch.bool)
    start = 0
    for b, ranking in enumerate(rankings):
        n = len(ranking.responses)
        rows.append(torch.nn.functional.pad(scores[start : start + n], (0, width - n)))
        ranks[b, :n], mask[b, :n] = torch.tensor(ranking.ranks), True
        start += n
    return torch.stack(rows), ranks, mask


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
    features = response_features(model.backbone, train.rankings, tokenizer.pad_token_id)
    optimiser = torch.optim.AdamW(model.head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    for _ in range(args.epochs):
        scores = torch.nn.functional.linear(features, model.head.weight, model.head.bias).squeeze(-1)
        losses, _ = plackett_luce(*ranking_grid(train.rankings, scores))
        optimiser.zero_grad()
        losses.mean().backward()
        optimiser.step()
    with torch.no_grad():
        scores = torch.nn.functional.linear(features, model.head.weight, model.head.bias).squeeze(-1)
    model.set_normalization(float(scores.mean()), float(scores.std()))
    summary = evaluate_reward_model(model, held_out, tokenizer.pad_token_id)
    save_reward_model(model, args.out, tokenizer, extra={"eval": summary, "frozen_backbone": True})
    print(f"{args.out}: {len(train.rankings)} rankings, final loss {losses.mean().item():.3f}; held-out {summary}")


if __name__ == "__main__":
    main()
