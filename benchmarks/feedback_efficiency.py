"""Human labels spent where they teach most, and trusted by who gave them: measured on real human labels.

    python benchmarks/feedback_efficiency.py                                   # labels, robustness, judges; seeds 0-4
    python benchmarks/feedback_efficiency.py --parts labels lora --seeds 0 1 2 3 4 5 6 7 8 9

The pool is the shared HH-RLHF harmless pairs (../shared/data/hh-rlhf-harmless), every fifth
pair held out (1,436 / 358, as recipes/rm-hh-smollm2.yaml); its human labels are the oracle.

Features are computed once: the built-in SmolLM2-135M-Instruct, frozen, read as the demo's
reward model reads it (`pooling: mean` over the reply, `feature_layers`: the token embeddings
and block 8, each token RMS-normalised). A reward model on frozen features is a linear head,
and Bradley–Terry on a linear head is L2-regularised logistic regression on the difference of
the two replies' features, fitted here exactly (L-BFGS, float64) in milliseconds, so every
strategy x seed x round can be retrained from scratch. An ensemble is K such heads on Poisson(1)
bootstrap weights (as `reward.ensemble` trains them); its mean scores the held-out pairs.

labels       Pool-based active learning. A seed set of --start random labelled pairs, then
             --rounds rounds of --batch pairs chosen by each strategy of
             `alignloop.feedback.selection` (uniform, uncertainty = BALD, entropy), the
             ensemble retrained each round. Held-out pairwise accuracy against labels used, per
             seed; the labels each strategy needs to reach uniform selection's final accuracy.
robustness   Scripted annotators over the pool: a team of 10, each pair judged by 3 of them in
             a random display order, honest ones following the human label but answering at
             random with probability `noise`, malicious ones answering its opposite (with the
             same noise); no gold items. Labels from: the human labels (clean), a majority vote,
             a majority of the evaluators today's quality checks do not flag
             (`feedback.quality.assess`: disagreement, position bias), and the reliability model
             (`feedback.reliability`: the export's `aggregation: model`, votes weighted by
             |logit η|, those of evaluators below chance inverted; with and without the record
             weights it writes; and as it was, max(0, logit η)).
             Each trains the ensemble; its held-out accuracy on the human labels, and who the
             reliability model calls malicious.
lora         The full LoRA reward model (recipes/rm-hh-smollm2.yaml) on the first
             --lora-labels pairs that uniform and BALD selection chose for seed 0.
judges       The built-in model as a judge (`alignloop.evaluation.judge.LocalJudge`) of
             --judge-pairs held-out pairs: agreement with the human label in one order and
             debiased over both, its preference for the reply shown first. Then routing on the
             first --judge-pool pool pairs: --human-budgets human labels (half at random, half
             by BALD), alone, with the judge's label on every other pair, and with it only
             where the judge is confident.

Writes feedback_efficiency.json and feedback_efficiency_*.png under benchmarks/results/<cpu>/.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_description, results_dir  # noqa: E402

from alignloop.feedback.quality import JudgementFacts, assess  # noqa: E402
from alignloop.feedback.reliability import fit_reliability, votes_from_facts  # noqa: E402
from alignloop.feedback.selection import pair_score, select_items  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAIRS = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless" / "pairs.jsonl.gz"
MODEL = "smollm2-135m-instruct"
FEATURE_LAYERS = (0, 8)  # the demo's reward model (alignloop/loop/demo/detox.yaml)
STRATEGIES = ("uniform", "uncertainty", "entropy")
L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
console = Console()


# ---------------------------------------------------------------- features, once


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def encoded_pairs(path: Path, tokenizer) -> tuple[list, list]:
    """The train and held-out pairs, encoded as the reward-model recipe encodes them."""
    from alignloop.data.preference import encode_preference_records
    from alignloop.data.preference_config import PreferenceDataConfig, read_preference_data

    config = PreferenceDataConfig(train=[path], hh_rlhf=True, eval_every_nth=5, max_length=192, max_prompt_length=96)
    data = read_preference_data(config)
    encode = lambda records: encode_preference_records(  # noqa: E731
        tokenizer, records, max_length=config.max_length, max_prompt_length=config.max_prompt_length)[0].pairs
    return encode(data.train), encode(data.eval)


def pair_features(model, pairs: list, pad_token_id: int, batch_pairs: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F) features of the chosen and of the rejected replies, batches of similar length."""
    from alignloop.data.collate import collate_pairs
    from alignloop.hardware import resolve_mixed_precision
    from alignloop.models.reward_model import response_mask_of

    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].chosen.input_ids) + len(pairs[i].rejected.input_ids))
    precision = resolve_mixed_precision("auto")
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision.precision == "bf16"
                else contextlib.nullcontext())
    chosen, rejected = [None] * len(pairs), [None] * len(pairs)
    with Progress(console=console) as progress, torch.no_grad(), autocast:
        task = progress.add_task("features of the pool (once)", total=len(pairs))
        for start in range(0, len(order), batch_pairs):
            rows = order[start:start + batch_pairs]
            batch = collate_pairs([pairs[i] for i in rows], pad_token_id)
            features = model.features(batch["input_ids"], batch["attention_mask"], batch["prefix_groups"],
                                      response_mask_of(batch)).double()
            for k, i in enumerate(rows):
                chosen[i], rejected[i] = features[k], features[len(rows) + k]
            progress.advance(task, len(rows))
    return torch.stack(chosen), torch.stack(rejected)


def pool_features(path: Path, cache_dir: Path) -> dict[str, torch.Tensor]:
    """{"train_chosen", "train_rejected", "eval_chosen", "eval_rejected"} (N, F) float64, cached by the file's digest."""
    cache = cache_dir / f"hh-features-{_file_digest(path)}-{'-'.join(map(str, FEATURE_LAYERS))}.pt"
    if cache.is_file():
        return torch.load(cache)
    from alignloop.models.reward_model import build_reward_model

    model, tokenizer = build_reward_model(MODEL, pooling="mean", feature_layers=FEATURE_LAYERS)
    model.eval()
    train, held_out = encoded_pairs(path, tokenizer)
    started = time.perf_counter()
    features = {}
    for split, pairs in (("train", train), ("eval", held_out)):
        features[f"{split}_chosen"], features[f"{split}_rejected"] = pair_features(model, pairs, tokenizer.pad_token_id)
    console.print(f"features of {len(train)} + {len(held_out)} pairs in {time.perf_counter() - started:.0f} s")
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(features, cache)
    return features


# ---------------------------------------------------------------- heads


def fit_heads(differences: torch.Tensor, weights: torch.Tensor, l2: float) -> torch.Tensor:
    """(n, F) chosen − rejected features, (n, K) bootstrap weights -> (K, F) heads minimising each
    member's mean weighted −log σ(w·d) + l2/2 ‖w‖² (Bradley–Terry on a linear head; the bias cancels)."""
    heads = torch.zeros(weights.shape[1], differences.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([heads], lr=1, max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")
    n = len(differences)

    def closure():
        optimizer.zero_grad()
        margins = differences @ heads.T  # (n, K)
        loss = (weights * torch.nn.functional.softplus(-margins)).sum() / n + l2 / 2 * (heads ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return heads.detach()


def poisson_weights(n: int, members: int, seed: int) -> torch.Tensor:
    """(n, K) Poisson(1) bootstrap weights; all ones for one member."""
    if members == 1:
        return torch.ones(n, 1, dtype=torch.float64)
    return torch.from_numpy(np.random.default_rng(seed).poisson(1.0, (n, members)).astype(np.float64))


def accuracy(heads: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of held-out pairs whose chosen reply the ensemble mean scores higher."""
    return ((chosen - rejected) @ heads.T).mean(-1).gt(0).double().mean().item()


def choose_l2(differences: torch.Tensor, folds: int = 5) -> float:
    """The L2 strength with the best 5-fold cross-validated accuracy on the whole labelled pool
    (one head; shared by every strategy, so it favours none)."""
    index = torch.randperm(len(differences), generator=torch.Generator().manual_seed(0))
    scores = {}
    for l2 in L2_GRID:
        right = 0
        for fold in range(folds):
            test = index[fold::folds]
            train = index[torch.isin(index, test, invert=True)]
            head = fit_heads(differences[train], poisson_weights(len(train), 1, 0), l2)
            right += (differences[test] @ head.T).gt(0).sum().item()
        scores[l2] = right / len(differences)
    return max(scores, key=scores.get)


# ---------------------------------------------------------------- part 1: labels


def selection_scores(heads: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, pool: list[int],
                     how: str) -> dict[int, float]:
    """Each unlabelled pair's score under `how`, from the members' raw scores of its two replies."""
    if how == "uniform":
        return dict.fromkeys(pool, 0.0)
    first, second = (chosen[pool] @ heads.T).tolist(), (rejected[pool] @ heads.T).tolist()
    return {i: pair_score(a, b, how) for i, a, b in zip(pool, first, second)}


def active_learning_curve(features: dict[str, torch.Tensor], how: str, seed: int, args, l2: float) -> dict[str, Any]:
    """[(labels, held-out accuracy)] of one strategy and seed, and the seconds spent selecting and training."""
    chosen, rejected = features["train_chosen"], features["train_rejected"]
    differences = chosen - rejected
    labelled = random.Random(seed).sample(range(len(chosen)), args.start)  # the same seed set for every strategy
    curve, seconds = [], 0.0
    for round_index in range(args.rounds + 1):
        started = time.perf_counter()
        heads = fit_heads(differences[labelled], poisson_weights(len(labelled), args.members, seed * 1000 + round_index),
                          l2)
        curve.append((len(labelled), accuracy(heads, features["eval_chosen"], features["eval_rejected"])))
        if round_index < args.rounds:
            taken = set(labelled)
            pool = [i for i in range(len(chosen)) if i not in taken]
            scores = selection_scores(heads, chosen, rejected, pool, how)
            labelled += select_items(scores, args.batch, how, seed * 1000 + round_index)
        seconds += time.perf_counter() - started
    return {"curve": curve, "seconds": seconds, "order": labelled}


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """The labels at which a curve first reaches `target`, interpolated between rounds; None if never."""
    for (n0, a0), (n1, a1) in zip([(0, float("-inf"))] + curve[:-1], curve):
        if a1 >= target:
            return float(n1) if a0 == float("-inf") or a1 == a0 else n0 + (n1 - n0) * (target - a0) / (a1 - a0)
    return None


def mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    return [(points[0][0], statistics.fmean(a for _, a in points)) for points in zip(*curves)]


def run_labels(features, args, l2: float) -> dict[str, Any]:
    runs: dict[str, list[dict]] = {how: [] for how in STRATEGIES}
    with Progress(console=console) as progress:
        task = progress.add_task("active learning (strategy x seed)", total=len(STRATEGIES) * len(args.seeds))
        for seed in args.seeds:
            for how in STRATEGIES:
                runs[how].append(active_learning_curve(features, how, seed, args, l2))
                progress.advance(task)
    means = {how: mean_curve([run["curve"] for run in runs[how]]) for how in STRATEGIES}
    target = means["uniform"][-1][1]
    summary = {}
    for how in STRATEGIES:
        per_seed = []
        for seed_index, run in enumerate(runs[how]):
            own_target = runs["uniform"][seed_index]["curve"][-1][1]
            per_seed.append(labels_to_reach(run["curve"], own_target))
        summary[how] = {
            "labels_to_reach_uniform_final_mean_curve": labels_to_reach(means[how], target),
            "labels_to_reach_uniform_final_per_seed": per_seed,
            "final_accuracy_per_seed": [run["curve"][-1][1] for run in runs[how]],
            "seconds_per_run_median": statistics.median(run["seconds"] for run in runs[how]),
        }
    uniform_labels = summary["uniform"]["labels_to_reach_uniform_final_mean_curve"]
    for how in STRATEGIES:
        needed = summary[how]["labels_to_reach_uniform_final_mean_curve"]
        summary[how]["label_saving_vs_uniform"] = None if needed is None else 1 - needed / uniform_labels
    return {"curves": {how: [run["curve"] for run in runs[how]] for how in STRATEGIES}, "mean_curves": means,
            "orders_seed0": {how: runs[how][0]["order"] for how in STRATEGIES},
            "uniform_final_accuracy_mean": target, "summary": summary}


# ---------------------------------------------------------------- part 2: robustness


def scripted_judgements(truth: list[bool], malicious_share: float, noise: float, seed: int, team: int = 10,
                        overlap: int = 3) -> tuple[list[JudgementFacts], set[int]]:
    """Pairwise judgements of `overlap` annotators per pair (item i, candidates 2i and 2i + 1, the
    first the human's choice when truth[i]); which annotators are malicious."""
    rng = random.Random(seed)
    bad = set(rng.sample(range(team), round(malicious_share * team)))
    facts = []
    for item, first_better in enumerate(truth):
        for evaluator in rng.sample(range(team), overlap):
            better = 2 * item if first_better else 2 * item + 1
            worse = 2 * item + 1 if first_better else 2 * item
            pick = better if evaluator not in bad else worse
            if rng.random() < noise:
                pick = rng.choice((better, worse))
            shown = (2 * item, 2 * item + 1) if rng.random() < 0.5 else (2 * item + 1, 2 * item)
            facts.append(JudgementFacts(len(facts), item, evaluator, "pairwise",
                                        {"choice": "a" if pick == shown[0] else "b", "better": pick}, shown))
    return facts, bad


def _vote_totals(facts: list[JudgementFacts], weight_of) -> dict[int, float]:
    """{item: weighted votes for the lower-id candidate minus those against}."""
    totals: dict[int, float] = {}
    for fact in facts:
        winner = fact.shown_order[0] if fact.answer["choice"] == "a" else fact.shown_order[1]
        totals[fact.item_id] = totals.get(fact.item_id, 0.0) + weight_of(fact) * (1 if winner % 2 == 0 else -1)
    return totals


def _weighted_vote(facts: list[JudgementFacts], weight_of) -> dict[int, bool]:
    """{item: is the lower-id candidate preferred} by weighted vote; items with a tie or no weight left out."""
    return {item: total > 0 for item, total in _vote_totals(facts, weight_of).items() if total != 0}


def aggregated_labels(facts: list[JudgementFacts], truth: list[bool]) -> tuple[dict[str, dict[int, bool]], Any]:
    """{aggregation: {item: (first better, training weight)}} and the fitted reliability model.

    model_floored is the export's `aggregation: model` before 2026-12-06 (votes of evaluators
    below chance count for nothing); model is the export now (their votes read inverted, the
    sign of the reliability model's posterior); model_weighted the same records with the
    `weight` the export writes, 2σ(|log-odds|) − 1, used in training."""
    _, rows = assess(facts, min_seconds=0.0)
    flagged = {row.evaluator_id for row in rows if row.flags}
    reliability = fit_reliability(votes_from_facts(facts))
    floored, signed = reliability.vote_weights(), reliability.vote_weights(signed=True)
    totals = _vote_totals(facts, lambda fact: signed[fact.evaluator_id])
    plain = lambda labels: {item: (label, 1.0) for item, label in labels.items()}  # noqa: E731
    return {
        "clean": plain(dict(enumerate(truth))),
        "majority": plain(_weighted_vote(facts, lambda fact: 1.0)),
        "unflagged_majority": plain(_weighted_vote(facts, lambda fact: 0.0 if fact.evaluator_id in flagged else 1.0)),
        "model_floored": plain(_weighted_vote(facts, lambda fact: floored[fact.evaluator_id])),
        "model": {item: (total > 0, 1.0) for item, total in totals.items() if total != 0},
        "model_weighted": {item: (total > 0, 2 / (1 + math.exp(-abs(total))) - 1)
                           for item, total in totals.items() if total != 0},
    }, (reliability, flagged)


def run_robustness(features, args, l2: float) -> list[dict[str, Any]]:
    chosen, rejected = features["train_chosen"], features["train_rejected"]
    rows = []
    settings = [(m, n) for m in args.malicious for n in args.noise]
    with Progress(console=console) as progress:
        task = progress.add_task("robustness (setting x seed)", total=len(settings) * len(args.seeds))
        for malicious_share, noise in settings:
            for seed in args.seeds:
                # The pool's pairs in a random orientation: the human's choice first or second.
                flips = random.Random(10_000 + seed).choices((True, False), k=len(chosen))
                facts, bad = scripted_judgements(flips, malicious_share, noise, seed)
                labels, (reliability, flagged) = aggregated_labels(facts, flips)
                row = {"malicious_share": malicious_share, "noise": noise, "seed": seed}
                for name, label_of in labels.items():
                    items = sorted(label_of)
                    # chosen − rejected when the human's choice is first; the label says which came first
                    human_first = torch.tensor([flips[i] for i in items])
                    first_better = torch.tensor([label_of[i][0] for i in items])
                    sign = torch.where(human_first == first_better, 1.0, -1.0).double()
                    differences = (chosen[items] - rejected[items]) * sign[:, None]
                    label_weights = torch.tensor([label_of[i][1] for i in items], dtype=torch.float64)[:, None]
                    heads = fit_heads(differences, poisson_weights(len(items), args.members, seed) * label_weights, l2)
                    row[f"{name}/accuracy"] = accuracy(heads, features["eval_chosen"], features["eval_rejected"])
                    row[f"{name}/labels"] = len(items)
                    row[f"{name}/label_accuracy"] = statistics.fmean(
                        label_of[i][0] == flips[i] for i in items) if items else None
                honest = [e for e in reliability.reliability if e not in bad]
                called = {e: reliability.verdict(e) for e in reliability.reliability}
                row["malicious_found"] = (sum(called[e] == "malicious" for e in bad) / len(bad)) if bad else None
                row["honest_called_malicious"] = sum(called[e] == "malicious" for e in honest) / len(honest)
                row["honest_called_noisy"] = sum(called[e] == "noisy" for e in honest) / len(honest)
                row["malicious_flagged_by_checks"] = (len(flagged & bad) / len(bad)) if bad else None
                row["honest_flagged_by_checks"] = len(flagged - bad) / len(honest)
                rows.append(row)
                progress.advance(task)
    return rows


# ---------------------------------------------------------------- the full LoRA reward model at one point


def lora_point(path: Path, orders: dict[str, list[int]], labels: int, work: Path) -> dict[str, Any]:
    """The LoRA reward model of recipes/rm-hh-smollm2.yaml trained on the first `labels` pairs
    each strategy chose (seed 0), scored on the same held-out pairs: held-out accuracy and minutes."""
    from alignloop.algorithms.reward import RewardConfig, run_reward
    from alignloop.config import load_config
    from alignloop.data.record_files import write_jsonl

    train, held_out = hh_records(path)
    work.mkdir(parents=True, exist_ok=True)
    write_jsonl(work / "held-out.jsonl", held_out)
    result = {}
    for how in ("uniform", "uncertainty"):
        subset = work / f"{how}-{labels}.jsonl"
        write_jsonl(subset, [train[i] for i in orders[how][:labels]])
        config = load_config(RewardConfig, ROOT / "recipes" / "rm-hh-smollm2.yaml", [
            f"data.train=[{subset}]", f"data.eval=[{work / 'held-out.jsonl'}]", "data.hh_rlhf=false",
            "data.eval_every_nth=null", f"train.output_dir={work / f'rm-{how}-{labels}'}", "train.save_every=null",
            "train.progress=false"])
        started = time.perf_counter()
        run_reward(config)
        accuracy_file = work / f"rm-{how}-{labels}" / "eval_results.json"
        result[how] = {"labels": labels, "accuracy": json.loads(accuracy_file.read_text())["pairs/accuracy"],
                       "minutes": (time.perf_counter() - started) / 60}
        console.print(f"LoRA reward model on {labels} {how}-chosen labels: held-out accuracy "
                      f"{result[how]['accuracy']:.3f} in {result[how]['minutes']:.1f} min")
    return result


# ---------------------------------------------------------------- part 3: judges


def hh_records(path: Path) -> tuple[list, list]:
    """The train and held-out HH-RLHF pairs as records (prompt messages, chosen, rejected)."""
    from alignloop.data.preference_config import PreferenceDataConfig, read_preference_data

    data = read_preference_data(PreferenceDataConfig(train=[path], hh_rlhf=True, eval_every_nth=5))
    return data.train.pairs, data.eval.pairs


def builtin_judge(batch_size: int):
    """The built-in model as a judge, in the weights dtype this machine runs fastest."""
    from alignloop.evaluation.judge import LocalJudge
    from alignloop.hardware import resolve_weight_dtype
    from alignloop.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(MODEL, dtype=resolve_weight_dtype("auto")[0])
    return LocalJudge(model.eval(), tokenizer, guidelines="Pick the response that is more harmless: it does not help "
                                                          "with anything dangerous, illegal or hurtful.",
                      batch_size=batch_size, max_length=640)  # the question and replies at the end; a long dialogue's start is cut


def judge_pairs(judge, pairs: list, seed: int) -> dict[str, Any]:
    """The judge on pairs in a seeded random orientation: agreement with the human label in one
    order and debiased over both; its preference for the reply shown first; seconds per pair
    (both orders); and P(chosen better), debiased, per pair."""
    chosen_first = random.Random(seed).choices((True, False), k=len(pairs))
    firsts = [p.chosen if c else p.rejected for p, c in zip(pairs, chosen_first)]
    seconds = [p.rejected if c else p.chosen for p, c in zip(pairs, chosen_first)]
    started = time.perf_counter()
    verdicts = judge.judge([p.prompt for p in pairs], firsts, seconds)
    seconds_per_pair = (time.perf_counter() - started) / len(pairs)
    right = lambda probabilities: statistics.fmean(  # noqa: E731
        (p > 0.5) == c for p, c in zip(probabilities, chosen_first))
    return {"pairs": len(pairs), "agreement_one_order": right(verdicts.as_given),
            "agreement_debiased": right(verdicts.debiased), "first_shown_preference": verdicts.first_shown_preference,
            "seconds_per_pair_both_orders": seconds_per_pair,
            "p_chosen": [p if c else 1 - p for p, c in zip(verdicts.debiased, chosen_first)]}


def routing_accuracy(features, pool: list[int], p_chosen: list[float], budget: int, seed: int, args, l2: float,
                     confident: float = 0.2) -> dict[str, float]:
    """Held-out accuracy from `budget` human labels on `pool` (half at random, half where the
    ensemble trained on those is least sure, BALD), alone; with the judge's debiased label on
    every other pool pair; and with it only where the judge is confident (|p − ½| > `confident`)."""
    chosen, rejected = features["train_chosen"], features["train_rejected"]
    differences = chosen - rejected
    rng = random.Random(seed)
    human = rng.sample(pool, budget // 2)
    heads = fit_heads(differences[human], poisson_weights(len(human), args.members, seed), l2)
    taken = set(human)
    rest = [i for i in pool if i not in taken]
    human += select_items(selection_scores(heads, chosen, rejected, rest, "uncertainty"), budget - len(human),
                          "uncertainty", seed)
    judge_of = dict(zip(pool, p_chosen))
    taken = set(human)
    others = [i for i in pool if i not in taken]

    def trained(judged: list[int]) -> float:
        signs = torch.tensor([1.0] * len(human) + [1.0 if judge_of[i] > 0.5 else -1.0 for i in judged],
                             dtype=torch.float64)
        rows = human + judged
        heads = fit_heads(differences[rows] * signs[:, None], poisson_weights(len(rows), args.members, seed), l2)
        return accuracy(heads, features["eval_chosen"], features["eval_rejected"])

    return {"people_only": trained([]), "people_and_judge": trained(others),
            "people_and_confident_judge": trained([i for i in others if abs(judge_of[i] - 0.5) > confident]),
            "confident_judge_labels": sum(abs(judge_of[i] - 0.5) > confident for i in others)}


def detox_judge_agreement(loop_dir: Path, batch_size: int) -> dict[str, Any]:
    """The built-in judge on a demo campaign's clearest comparisons: per item its least and
    most toxic candidate by alt-profanity-check, 0.3 or more apart (what the demo's gold items
    are), judged with the demo's guidelines; agreement with the scorer, one order and debiased."""
    from annotator_reliability import campaign_items

    from alignloop.loop.annotator_checks import gold_items_from_scores
    from alignloop.loop.config import FeedbackSettings
    from alignloop.rewards import build_reward_source
    from alignloop.rewards.config import RewardSourceConfig

    items = campaign_items(loop_dir)
    scorer = build_reward_source(RewardSourceConfig(type="toxicity"))
    texts = [[text for _, text in candidates] for _, candidates in items]
    flat = scorer([prompt for (prompt, _), row in zip(items, texts) for _ in row], [t for row in texts for t in row])
    scores, start = [], 0
    for row in texts:
        scores.append(flat[start:start + len(row)])
        start += len(row)
    rows = gold_items_from_scores([prompt for prompt, _ in items], texts, scores, min_gap=0.3)
    judge = builtin_judge(batch_size)
    judge.guidelines = FeedbackSettings().guidelines
    better_first = random.Random(0).choices((True, False), k=len(rows))
    pairs = [(row["candidates"][row["gold"]["pairwise"]["better"]], row["candidates"][1 - row["gold"]["pairwise"]["better"]])
             for row in rows]
    firsts = [b if f else w for (b, w), f in zip(pairs, better_first)]
    seconds = [w if f else b for (b, w), f in zip(pairs, better_first)]
    verdicts = judge.judge([row["prompt"] for row in rows], firsts, seconds)
    right = lambda probabilities: statistics.fmean((p > 0.5) == f for p, f in zip(probabilities, better_first))  # noqa: E731
    return {"pairs": len(rows), "agreement_one_order": right(verdicts.as_given),
            "agreement_debiased": right(verdicts.debiased), "first_shown_preference": verdicts.first_shown_preference}


# ---------------------------------------------------------------- output


def plot_labels(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for how in STRATEGIES:
        curves = result["curves"][how]
        labels = [n for n, _ in curves[0]]
        values = np.array([[a for _, a in curve] for curve in curves])
        ax.plot(labels, values.mean(0), label=how, marker="o", markersize=3)
        ax.fill_between(labels, values.min(0), values.max(0), alpha=0.15)
    ax.axhline(result["uniform_final_accuracy_mean"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("human labels used")
    ax.set_ylabel("held-out pairwise accuracy (358 HH-RLHF pairs)")
    ax.set_title("Active selection on HH-RLHF harmless (frozen SmolLM2-135M features)\nmean over seeds, band: min-max")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


ROBUST_AGGREGATIONS = ("clean", "majority", "unflagged_majority", "model_floored", "model", "model_weighted")


def robustness_means(rows: list[dict[str, Any]]) -> dict[tuple[float, float], dict[str, float]]:
    grouped: dict[tuple[float, float], list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["malicious_share"], row["noise"]), []).append(row)
    return {key: {field: statistics.fmean(r[field] for r in group if r[field] is not None)
                  for field in group[0] if field not in ("malicious_share", "noise", "seed")
                  and any(r[field] is not None for r in group)}
            for key, group in grouped.items()}


def plot_robustness(rows: list[dict[str, Any]], noise: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = robustness_means(rows)
    shares = sorted({m for m, n in means if n == noise})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ROBUST_AGGREGATIONS:
        ax.plot([100 * m for m in shares], [means[(m, noise)][f"{name}/accuracy"] for m in shares], marker="o",
                label=name)
    ax.set_xlabel("malicious annotators (% of 10)")
    ax.set_ylabel("reward model's held-out accuracy (human labels)")
    ax.set_title(f"Labels from 3 scripted annotators per pair, noise {noise:.0%}, no gold items\nmean over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_labels(result: dict[str, Any]) -> None:
    table = Table(title="labels to reach uniform selection's final accuracy "
                        f"({result['uniform_final_accuracy_mean']:.3f}, mean over seeds)")
    for column in ("strategy", "labels (mean curve)", "saving", "per seed", "final accuracy per seed"):
        table.add_column(column)
    for how, row in result["summary"].items():
        needed, saving = row["labels_to_reach_uniform_final_mean_curve"], row["label_saving_vs_uniform"]
        table.add_row(how, "never" if needed is None else f"{needed:.0f}",
                      "—" if saving is None else f"{saving:+.0%}",
                      " ".join("never" if n is None else f"{n:.0f}" for n in row["labels_to_reach_uniform_final_per_seed"]),
                      " ".join(f"{a:.3f}" for a in row["final_accuracy_per_seed"]))
    console.print(table)


def print_robustness(rows: list[dict[str, Any]]) -> None:
    table = Table(title="reward model's held-out accuracy by label aggregation (mean over seeds)")
    for column in ("malicious", "noise", *ROBUST_AGGREGATIONS, "malicious found", "honest called malicious"):
        table.add_column(column)
    for (m, n), mean in sorted(robustness_means(rows).items()):
        table.add_row(f"{m:.0%}", f"{n:.0%}", *(f"{mean[f'{name}/accuracy']:.3f}" for name in ROBUST_AGGREGATIONS),
                      f"{mean['malicious_found']:.0%}" if "malicious_found" in mean else "—",
                      f"{mean['honest_called_malicious']:.0%}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS, help="HH-RLHF chosen/rejected dialogues (.jsonl.gz)")
    parser.add_argument("--parts", nargs="+", default=["labels", "robustness", "judges"],
                        choices=["labels", "robustness", "judges", "lora"])
    parser.add_argument("--lora-labels", type=int, default=400, help="lora: labels per strategy (seed 0's choice)")
    parser.add_argument("--judge-pairs", type=int, default=200, help="held-out pairs the judge reads (both orders)")
    parser.add_argument("--judge-pool", type=int, default=300, help="judges: the first N pool pairs routing shares out")
    parser.add_argument("--human-budgets", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--demo-dir", type=Path, default=None, help="judges: also a demo run's campaign "
                                                                      "(`alignloop demo output_dir=DIR`)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--start", type=int, default=50, help="random labelled pairs to start from")
    parser.add_argument("--batch", type=int, default=50, help="pairs labelled per round")
    parser.add_argument("--rounds", type=int, default=18)
    parser.add_argument("--members", type=int, default=5, help="ensemble members (bootstrap heads)")
    parser.add_argument("--malicious", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "alignloop-benchmarks")
    args = parser.parse_args()
    if not args.pairs.is_file():
        parser.error(f"--pairs: no file at {args.pairs}")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    features = pool_features(args.pairs, args.cache)
    differences = features["train_chosen"] - features["train_rejected"]
    started = time.perf_counter()
    l2 = choose_l2(differences)
    every_label = fit_heads(differences, poisson_weights(len(differences), args.members, 0), l2)
    ceiling = accuracy(every_label, features["eval_chosen"], features["eval_rejected"])
    console.print(f"L2 {l2:g} by 5-fold CV; every pool label ({len(differences)}): held-out accuracy {ceiling:.3f} "
                  f"({time.perf_counter() - started:.1f} s)")
    out_dir = results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "cpu": cpu_description(), "date": time.strftime("%Y-%m-%d"), "model": MODEL, "feature_layers": FEATURE_LAYERS,
        "pool": len(differences), "held_out": len(features["eval_chosen"]), "l2": l2, "members": args.members,
        "every_pool_label_accuracy": ceiling,
    }
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    if "labels" in args.parts:
        result["labels"] = run_labels(features, args, l2)
        plot_labels(result["labels"], out_dir / "feedback_efficiency_labels.png")
        print_labels(result["labels"])
    if "lora" in args.parts:
        if "labels" not in args.parts:
            parser.error("--parts lora needs labels (the strategies' choices of seed 0)")
        result["lora"] = lora_point(args.pairs, result["labels"]["orders_seed0"], args.lora_labels,
                                    args.cache / "lora-point")
    if "robustness" in args.parts:
        rows = run_robustness(features, args, l2)
        result["robustness"] = {"rows": rows}
        for noise in args.noise:
            plot_robustness(rows, noise, out_dir / f"feedback_efficiency_robustness_noise{round(100 * noise)}.png")
        print_robustness(rows)
    if "judges" in args.parts:
        train_records, held_out = hh_records(args.pairs)
        judge = builtin_judge(batch_size=4)
        on_held_out = judge_pairs(judge, held_out[:args.judge_pairs], seed=0)
        pool = list(range(args.judge_pool))
        on_pool = judge_pairs(judge, [train_records[i] for i in pool], seed=1)
        result["judges"] = {"held_out": {k: v for k, v in on_held_out.items() if k != "p_chosen"},
                            "pool": {k: v for k, v in on_pool.items() if k != "p_chosen"}, "routing": {}}
        console.print(f"judge ({MODEL}) on {on_held_out['pairs']} held-out pairs: agreement with the human label "
                      f"{on_held_out['agreement_one_order']:.3f} in one order, {on_held_out['agreement_debiased']:.3f} "
                      f"debiased; picks the first shown {on_held_out['first_shown_preference']:.0%}; "
                      f"{on_held_out['seconds_per_pair_both_orders']:.2f} s a pair; on the first {len(pool)} pool "
                      f"pairs {on_pool['agreement_debiased']:.3f} debiased")
        if args.demo_dir is not None:
            detox = detox_judge_agreement(args.demo_dir, batch_size=4)
            result["judges"]["detox"] = detox
            console.print(f"judge on {detox['pairs']} detox comparisons of {args.demo_dir}: agreement with "
                          f"alt-profanity-check {detox['agreement_one_order']:.3f} in one order, "
                          f"{detox['agreement_debiased']:.3f} debiased; picks the first shown "
                          f"{detox['first_shown_preference']:.0%}")
        for budget in args.human_budgets:
            runs = [routing_accuracy(features, pool, on_pool["p_chosen"], budget, seed, args, l2) for seed in args.seeds]
            result["judges"]["routing"][budget] = {key: statistics.fmean(run[key] for run in runs) for key in runs[0]}
            console.print(f"routing, {budget} human labels of {len(pool)}: " + ", ".join(
                f"{key} {value:.3f}" for key, value in result["judges"]["routing"][budget].items()))
    for part in args.parts:  # each part keeps its own settings: parts are often run apart and merged below
        result[part]["settings"] = settings
    result.get("labels", {}).pop("orders_seed0", None)  # the lora part's input, not a result
    path = out_dir / "feedback_efficiency.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**previous, **result}, indent=1))
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
