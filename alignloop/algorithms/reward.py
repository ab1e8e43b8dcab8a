"""Reward model training: a scalar score that agrees with human judgements.

The backbone (the SFT model or any causal LM) reads prompt + response; a linear head turns the
hidden state of the last real token into a score. Three kinds of judgement train it, alone or
mixed in one batch:

* pairs — Bradley–Terry: P(chosen ≻ rejected) = σ(r_c − r_r), with an optional margin;
* K-way rankings — Plackett–Luce, the listwise generalisation: the best response is drawn
  first from a softmax over all, the next from the rest, and so on (ties: Breslow). A ranking
  of K carries up to K·(K−1)/2 pairwise facts at the cost of K forward rows, not K·(K−1);
* ratings — regression on the score mapped to [0, 1] on its declared scale, or an ordinal
  (cumulative-link) model whose class thresholds are learned with the head; or turned into
  pairs of responses to the same prompt.

With `backbone: frozen` only the head (and any rating thresholds) trains, on features computed
once per reply (alignloop/models/frozen_features.py). `ensemble: K` trains K members in the same
run, each on its own bootstrap of the judgements (alignloop/models/reward_ensemble.py), saved as
one reward-model folder: K heads on those frozen features, or, on a LoRA backbone that trains,
K adapters on the one shared base, each with its head (alignloop/models/adapter_members.py).

After training, the mean and std of the scores of the training responses are stored with the
model, so that normalised scores (mean 0, std 1) are comparable across reward models.
The training metrics average over every item of a step; with mixed kinds, the per-kind
metrics (rewards/accuracies, ranking/...) are diluted — the final evaluation reports each kind
on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from alignloop.algorithms.run import RunContext, TrainingJob, run_method
from alignloop.config import Section
from alignloop.data import (
    EncodedPair,
    EncodedRanking,
    EncodedRating,
    PreferenceDataConfig,
    collate_pairs,
    collate_rankings,
    collate_ratings,
    dataset_fingerprint,
    encode_preference_records,
    ratings_to_pairs,
    read_preference_data,
)
from alignloop.engine import LossOutput, TrainConfig, TrainingMethod, TrainResult
from alignloop.evaluation.reward_evaluation import evaluate_reward_model, evaluation_headline, score_encoded_members
from alignloop.losses import RATING_LOSSES, bradley_terry, plackett_luce
from alignloop.losses.variants import call_variant, takes
from alignloop.models import ModelConfig, RewardModel, build_reward_model, save_reward_model
from alignloop.models.frozen_features import FrozenFeatures
from alignloop.models.reward_ensemble import bootstrap_weights
from alignloop.models.reward_model import response_mask_of


RATINGS_AS_PAIRS = "pairs"  # rating_loss that turns the ratings of a prompt into preference pairs
MEMBER_KEY = "member"  # in a part of a batch (RewardMethod.parts): the one member it trains


class RewardSettings(Section):
    rating_loss: Literal[(*RATING_LOSSES, RATINGS_AS_PAIRS)] = Field(  # type: ignore[valid-type]
        "regression", description="ratings: a key of alignloop.losses.RATING_LOSSES (regression, ordinal), or "
                                  f"{RATINGS_AS_PAIRS!r}: pairs per prompt"
    )
    rating_classes: int | None = Field(None, ge=2, description="ordinal: number of rating classes (integer scale)")
    rating_pair_min_gap: float = Field(1.0, gt=0, description="rating_loss=pairs: smallest score gap that makes a pair")
    pair_weight: float = Field(1.0, ge=0, description="weight of the pairwise (Bradley–Terry) loss")
    ranking_weight: float = Field(1.0, ge=0, description="weight of the listwise (Plackett–Luce) loss")
    rating_weight: float = Field(1.0, ge=0, description="weight of the rating loss")
    normalization_samples: int = Field(512, ge=0, description="training responses scored to set mean/std (0: none)")
    backbone: Literal["trained", "frozen"] = Field(
        "trained", description="train the backbone (its LoRA adapters, or all of it) with the head, or keep it as "
                               "loaded and train the head alone on features computed once (models/frozen_features.py)")
    pooling: Literal["last", "mean"] = Field(
        "last", description="read the score at the last token, or from the mean over the response's tokens "
                            "(learns from fewer judgements what lives in the reply's words; see models/reward_model.py)")
    feature_layers: list[int] | None = Field(
        None, description="the hidden states the head reads, each RMS-normalised per token, pooled and side by "
                          "side: 0 = the token embeddings, i = block i's output (null: the last, after the final "
                          "norm; [0, 8] learnt toxicity from the demo's feedback better, see models/reward_model.py)")
    ensemble: int = Field(1, ge=1, le=64, description="members, each trained on its own bootstrap of the judgements: "
                                                      "K heads on the frozen features (backbone: frozen), or K LoRA "
                                                      "adapters on one shared base, each with its head (a LoRA "
                                                      "backbone that trains)")


class RewardConfig(Section):
    model: ModelConfig = Field(description="the backbone: the SFT model or any causal LM")
    data: PreferenceDataConfig = Field(description="pairs, K-way rankings and/or ratings")
    train: TrainConfig = Field(default_factory=TrainConfig, description="optimiser, schedule and run settings")
    reward: RewardSettings = Field(default_factory=RewardSettings, description="losses and their weights")

    @model_validator(mode="after")
    def _trained_members_need_lora(self) -> RewardConfig:
        if self.reward.ensemble > 1 and self.reward.backbone == "trained" and not has_adapters(self.model):
            raise ValueError(f"reward.ensemble: {self.reward.ensemble} with a backbone that trains needs LoRA "
                             "(model.lora or model.adapter: each member is an adapter on the shared base, not a "
                             "whole model), or reward.backbone: frozen (each member a head on shared features)")
        return self


def has_adapters(model: ModelConfig) -> bool:
    """Whether the backbone is built with LoRA adapters (new ones, or a saved one to continue)."""
    return model.lora is not None or model.adapter is not None


def members_are_adapters(config: RewardConfig) -> bool:
    """An ensemble whose members each train their own LoRA adapter (else: heads on shared features)."""
    return config.reward.ensemble > 1 and config.reward.backbone == "trained"


def collate_judgements(items: list, pad_token_id: int, members: int = 1, seed: int = 0) -> dict[str, Any]:
    """Group a mixed list of encoded judgements into one sub-batch per kind; for an ensemble,
    each sub-batch also holds its judgements' bootstrap weights, "member_weights" (B, K)."""
    batch: dict[str, Any] = {}
    for name, kind, collate in (("pairs", EncodedPair, collate_pairs), ("rankings", EncodedRanking, collate_rankings),
                                ("ratings", EncodedRating, collate_ratings)):
        chosen = [item for item in items if isinstance(item, kind)]
        if chosen:
            batch[name] = collate(chosen, pad_token_id)
            if members > 1:
                batch[name]["member_weights"] = bootstrap_weights([identity_of(item) for item in chosen], members, seed)
    return batch


def identity_of(item) -> tuple:
    """What tells a judgement apart from every other: its kind, the token ids of its (prompt +
    reply) rows and its verdict (two ratings of one reply on two axes are two judgements)."""
    if isinstance(item, EncodedPair):
        return "pair", list(item.chosen.input_ids), list(item.rejected.input_ids), item.margin
    if isinstance(item, EncodedRanking):
        return "ranking", [list(response.input_ids) for response in item.responses], list(item.ranks)
    return "rating", list(item.example.input_ids), item.score, item.axis


# How many judgements each kind of sub-batch holds: the items the loss is averaged over.
JUDGEMENTS_IN = {
    "pairs": lambda sub: sub["input_ids"].shape[0] // 2,  # chosen and rejected rows
    "rankings": lambda sub: sub["ranks"].shape[0],
    "ratings": lambda sub: sub["score"].shape[0],
}


@dataclass(frozen=True)
class RewardMethod(TrainingMethod):
    settings: RewardSettings
    frozen_features: FrozenFeatures | None = None  # reward.backbone: frozen
    adapter_members: int = 0  # an ensemble whose members are adapters: how many (each trains in its own part)

    def count_items(self, batch: dict[str, Any]) -> int:
        return sum(JUDGEMENTS_IN[name](sub) for name, sub in batch.items() if name != MEMBER_KEY)

    def parts(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Members with their own adapters train one per part: forward and backward of member 0,
        then of member 1, ... so one member's activations are held at a time, not K's."""
        if self.adapter_members < 2:
            return [batch]
        return [{**batch, MEMBER_KEY: member} for member in range(self.adapter_members)]

    def loss(self, model: RewardModel, batch: dict[str, Any]) -> LossOutput:
        total = torch.zeros((), device=next(model.parameters()).device)
        metrics: dict[str, torch.Tensor] = {}
        member = batch.get(MEMBER_KEY)
        for name, fn, weight in (("pairs", self._pairs, self.settings.pair_weight),
                                 ("rankings", self._rankings, self.settings.ranking_weight),
                                 ("ratings", self._ratings, self.settings.rating_weight)):
            if name in batch:
                loss_sum, parts = fn(model, batch[name], member)
                total = total + weight * loss_sum
                metrics.update(parts)
        return LossOutput(total, metrics)

    def _member_scores(self, model, sub, member: int | None) -> torch.Tensor:
        """(rows, members) raw scores of a collated sub-batch, or (rows, 1) of `member` alone,
        from cached features when the backbone is frozen."""
        rows = (sub["input_ids"], sub["attention_mask"], sub.get("prefix_groups"), response_mask_of(sub))
        if self.frozen_features is None:
            return model(*rows, members=True, member=member)
        features = self.frozen_features(getattr(model, "module", model), *rows)  # DDP: .module
        return model(features=features, members=True, member=member)

    def _over_members(self, model, sub, loss_of, member: int | None):
        """(loss_sum, metrics) of a sub-batch, sums over its examples like the losses', from
        `loss_of((rows,) one member's scores) -> (losses (B,), metrics (B,))`, a loss's
        `per_example` form: the bootstrap weights are per example and member, a judgement's
        `weight` per example; both apply while training, the held-out loss is the plain one.
        Every member's losses and metrics are averaged over the members: an ensemble's training
        metrics are its members' mean, not the ensemble's. With `member` k (one part of
        `parts`), member k's share of that mean: its sums over K."""
        scores = self._member_scores(model, sub, member)  # (rows, K), or (rows, 1)
        results = [loss_of(scores[:, column]) for column in range(scores.shape[-1])]
        losses = torch.stack([member_losses for member_losses, _ in results], -1)  # (B, columns)
        if "member_weights" in sub and model.training:  # the held-out loss is every member's plain loss
            weights = sub["member_weights"] if member is None else sub["member_weights"][:, member : member + 1]
            losses = losses * weights.to(losses)
        if "weight" in sub and model.training:  # each judgement's share (the export's confidence in it)
            losses = losses * sub["weight"].to(losses)[:, None]
        share = 1.0 if member is None else 1.0 / self.adapter_members
        metrics = {key: share * torch.stack([parts[key] for _, parts in results], -1).mean(-1).sum()  # members, examples
                   for key in results[0][1]}
        return share * losses.mean(-1).sum(), metrics

    def _pairs(self, model, sub, member=None):
        half = sub["input_ids"].shape[0] // 2  # chosen rows, then rejected rows
        margin = torch.where(sub["has_margin"], sub["margin"], torch.zeros_like(sub["margin"]))
        return self._over_members(model, sub, lambda scores: bradley_terry.per_example(scores[:half], scores[half:],
                                                                                       margin=margin), member)

    def _rankings(self, model, sub, member=None):
        slots = sub["slot_index"].clamp(min=0)  # (B, slots): each ranked response's row
        return self._over_members(model, sub, lambda scores: plackett_luce.per_example(scores[slots], sub["ranks"],
                                                                                       mask=sub["ranking_mask"]), member)

    def _ratings(self, model, sub, member=None):
        loss_fn = RATING_LOSSES[self.settings.rating_loss]
        inputs = {"score": sub["score"], "scale_min": sub["scale_min"], "scale_max": sub["scale_max"]}
        if learns_thresholds(self.settings):  # ordinal: the rating as a class between learned cut points
            inputs.update(score_index=(sub["score"] - sub["scale_min"]).round().long(), thresholds=model_thresholds(model))
        return self._over_members(model, sub,
                                  lambda scores: call_variant(loss_fn.per_example, predicted=scores, **inputs), member)


def learns_thresholds(settings: RewardSettings) -> bool:
    """Whether the rating loss learns cut points between rating classes (the model holds them)."""
    loss_fn = RATING_LOSSES.get(settings.rating_loss)
    return loss_fn is not None and takes(loss_fn, "thresholds")


def model_thresholds(model) -> torch.Tensor:
    inner = getattr(model, "module", model)
    if inner.rating_thresholds is None:
        raise ValueError("reward.rating_loss=ordinal needs reward.rating_classes")
    return inner.rating_thresholds


def training_items(encoded, settings: RewardSettings) -> list:
    """Every encoded judgement the loss will see; ratings become pairs when asked to."""
    items = list(encoded.pairs) + list(encoded.rankings)
    if settings.rating_loss != RATINGS_AS_PAIRS:
        items += list(encoded.ratings)
    return items


def freeze_unused_output_layer(model: RewardModel) -> None:
    """The LM head is not used for scores; an untied one would get no gradient (DDP refuses)."""
    backbone = model.backbone
    output, inputs = backbone.get_output_embeddings(), backbone.get_input_embeddings()
    if output is not None and output.weight is not inputs.weight:
        output.weight.requires_grad_(False)


def set_normalization_from(model: RewardModel, items: list, pad_token_id: int, limit: int) -> None:
    """Each member's mean and std on (up to `limit` of) the training replies."""
    if limit == 0:
        return
    scores = score_encoded_members(model, responses_of(items)[:limit], pad_token_id).double()  # (N, K)
    if len(scores) >= 2:
        std = scores.std(0, correction=0)
        model.set_normalization(scores.mean(0).tolist(), torch.where(std > 0, std, torch.ones_like(std)).tolist())


def responses_of(items: list) -> list:
    """Every encoded (prompt + response) sequence in a list of judgements."""
    out = []
    for item in items:
        if isinstance(item, EncodedPair):
            out += [item.chosen, item.rejected]
        elif isinstance(item, EncodedRanking):
            out += list(item.responses)
        elif isinstance(item, EncodedRating):
            out.append(item.example)
    return out


def run_reward(config: RewardConfig, resume: bool | str = False) -> TrainResult:
    return run_method(config, partial(prepare_reward, config), resume)


def prepare_reward(config: RewardConfig, context: RunContext) -> TrainingJob:
    classes = config.reward.rating_classes if learns_thresholds(config.reward) else None
    model, tokenizer = build_reward_model(config.model, num_rating_classes=classes, pooling=config.reward.pooling,
                                          members=config.reward.ensemble, feature_layers=config.reward.feature_layers,
                                          member_adapters=members_are_adapters(config))
    frozen = config.reward.backbone == "frozen"
    if frozen:
        model.backbone.requires_grad_(False)  # LoRA adapters too: they stay as built (B = 0)
    freeze_unused_output_layer(model)
    model.train()
    data = read_preference_data(config.data)
    encode = partial(encode_preference_records, tokenizer, max_length=config.data.max_length,
                     max_prompt_length=config.data.max_prompt_length,
                     use_chat_template=config.data.use_chat_template, on_invalid=config.data.on_invalid)
    train, report = encode(with_rating_pairs(data.train, config.reward))
    evaluation, _ = encode(with_rating_pairs(data.eval, config.reward))
    context.console.print(f"[bold]data[/]: {data.report}; encoded: {report}")
    pad = tokenizer.pad_token_id
    items, eval_items = training_items(train, config.reward), training_items(evaluation, config.reward)
    fingerprint = dataset_fingerprint(data.train.pairs + data.train.rankings + data.train.ratings)
    finalize = partial(finalize_reward_model, config=config, tokenizer=tokenizer, items=items,
                       evaluation=evaluation if eval_items else None, fingerprint=fingerprint, console=context.console)
    return TrainingJob(
        model, RewardMethod(config.reward, FrozenFeatures() if frozen else None,
                            config.reward.ensemble if members_are_adapters(config) else 0), items,
        partial(collate_judgements, pad_token_id=pad, members=config.reward.ensemble, seed=config.train.seed),
        save_final=finalize, eval_examples=eval_items,
        data_info={"train_sha256": fingerprint, "train_items": len(items), "eval_items": len(eval_items),
                   "encoding": str(report)},
        saved_what="reward model",
    )


def finalize_reward_model(trained: RewardModel, path: Path, *, config: RewardConfig, tokenizer, items: list,
                          evaluation, fingerprint: str, console) -> None:
    """Normalise the scores on the training replies, measure the held-out judgements (written
    beside the model and to the run's eval_results.json), and save."""
    pad = tokenizer.pad_token_id
    set_normalization_from(trained, items, pad, config.reward.normalization_samples)
    summary = evaluate_reward_model(trained, evaluation, pad) if evaluation is not None else {}
    save_reward_model(trained, path, tokenizer, extra={"eval": summary, "train_sha256": fingerprint,
                                                        "backbone": config.reward.backbone})
    if summary:
        (path.parent / "eval_results.json").write_text(json.dumps(summary, indent=2))
        console.print(f"[bold]held-out evaluation[/]: {evaluation_headline(summary)}")


def with_rating_pairs(records, settings: RewardSettings):
    """With rating_loss=pairs, ratings of the same prompt become preference pairs."""
    if settings.rating_loss != RATINGS_AS_PAIRS or not records.ratings:
        return records
    extra = ratings_to_pairs(records.ratings, min_gap=settings.rating_pair_min_gap)
    return replace(records, pairs=list(records.pairs) + extra, ratings=[])
