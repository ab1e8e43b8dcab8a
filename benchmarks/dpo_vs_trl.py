"""DPO losses and rewards of alignloop and of TRL's DPOTrainer on the same model and batch.

One reference model, one policy that differs from it, a few preference pairs; for each DPO
loss both libraries compute the loss and the implicit-reward metrics, and the script fails
(exit 1) if any of them disagree beyond the tolerance.

    pip install -r benchmarks/requirements-trl.txt     # optional, benchmarks only
    python benchmarks/dpo_vs_trl.py --tiny             # tiny random Llama, about a minute
    python benchmarks/dpo_vs_trl.py                    # built-in SmolLM2-135M-Instruct

The setup:

- Model. `--tiny`: a random 2-layer Llama with the SmolLM2 tokenizer
  (`alignloop.models.build_tiny_causal_lm`); otherwise the built-in SmolLM2-135M-Instruct
  (`load_model_and_tokenizer`), float32, sdpa attention. That network is the reference.
- Policy. A copy of the reference with fixed-seed Gaussian noise added to every weight tensor,
  `w += noise * std(w) * N(0, 1)` (`--noise`: 0.02 for SmolLM2, 1.0 for the tiny model, whose
  random weights are near-uniform; `--seed`). A perturbation rather than an optimiser step keeps
  the policy independent of either library's gradients and gives pairs ranked both ways, so the
  losses are not log 2 and the accuracy is not trivially 0 or 1.
- Pairs. The first `--pairs` records of recipes/data/calm-pairs.jsonl, one batch.
- Both models in eval mode (neither has dropout), float32, no autocast.

What each side runs:

- alignloop: `encode_preference_records` (chat template) -> `precompute_reference` with the
  reference model (its default `reference: precompute` path) -> `collate_with_reference` ->
  `DPOMethod.loss` with the policy, exactly as the trainer calls it. `LossOutput` holds sums
  over the pairs; the table shows them divided by the number of pairs (what the engine logs).
- TRL: a real `DPOTrainer(model=policy, ref_model=reference, args=DPOConfig(...),
  train_dataset=..., eval_dataset=..., processing_class=tokenizer)` per loss, built from the
  raw conversational records, then `trainer.evaluate()`. That exercises TRL's own dataset
  preparation (`_prepare_dataset`: chat template via `apply_chat_template`, prompt/completion
  split at the common prefix), `DataCollatorForPreference`, the fused LM head that TRL patches
  onto both models (`add_fused_lm_head`, chunked log-softmax), `_compute_loss` (log-ratios,
  the loss variants, the `rewards/*` and `logps/*` metrics) and the Trainer's evaluation loop.
  Per-pair log-probs come from `trainer.compute_ref_log_probs` (the function TRL uses to
  precompute reference log-probs), applied to both the policy and the reference.
- Before any number is compared, TRL's token ids (prompt_ids / chosen_ids / rejected_ids and the
  collated input_ids / attention_mask / completion_mask) are checked against alignloop's
  (input_ids / attention_mask / labels != -100). If they differed, that is reported as a failure
  and TRL is given alignloop's ids instead, so the losses are still compared on one batch.

Known differences, shown rather than hidden:

- IPO: TRL divides each sequence's log-ratio by its completion length before the squared loss
  (its source says the IPO authors confirmed that choice); alignloop's `dpo_ipo` uses summed
  log-probs, as eq. 17 of the paper reads. The loss of `ipo` therefore differs by design and is
  not checked; the row `ipo (length-normalised)` feeds alignloop's `dpo_ipo` per-token average
  log-probs and is checked against the same TRL number. TRL's IPO reward metrics are not
  normalised, so they are checked in the plain `ipo` row.
- TRL 1.16's `sigmoid` ignores `label_smoothing` (no cDPO); alignloop's `sigmoid` with
  label_smoothing > 0 is cDPO and has no TRL counterpart, so only label_smoothing = 0 is
  compared for sigmoid. rDPO (`robust`) is compared at 0 and at `--robust-eps`.

Losses compared: sigmoid, robust (rDPO) at label_smoothing 0 and `--robust-eps`, hinge at β and
at `--hinge-beta` (1.0: some pairs have β·h > 1, so the clipped side of the hinge is checked too),
and IPO as above; all at `--beta` (0.1) unless named.

Tolerance: |alignloop - TRL| <= atol + rtol * max(|TRL|, S) (defaults rtol 1e-4, atol 1e-5).
S = 0 for log-probs and the accuracy. The loss and the rewards are differences of summed
log-probs of size L (a few hundred nats here) scaled by β, so float32 rounding in either library
leaves them an error of order β·L·1e-7 however small they are themselves: for them S = β·L, L the
mean |summed log-prob| of the batch. (Without S, a reward near 0 would need a relative agreement
that float32 sums of a few hundred cannot give: --pairs 3 --tiny fails so at β = 1.)
Results go to benchmarks/results/<cpu>/dpo_vs_trl.json (or `--out`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

from alignloop.hardware import cpu_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / cpu_info().slug  # one folder per CPU
BUILTIN = "smollm2-135m-instruct"

# alignloop metric name -> TRL metric name (TRL logs batch means; alignloop sums per pair).
METRICS = {
    "rewards/chosen": "rewards/chosen",
    "rewards/rejected": "rewards/rejected",
    "rewards/margins": "rewards/margins",
    "rewards/accuracies": "rewards/accuracies",
    "logps/chosen": "logps/chosen",
    "logps/rejected": "logps/rejected",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random Llama (SmolLM2 tokenizer) instead of SmolLM2-135M")
    parser.add_argument("--pairs", type=int, default=8, help="number of preference pairs (one batch)")
    parser.add_argument("--data", default=str(ROOT / "recipes/data/calm-pairs.jsonl"))
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--robust-eps", type=float, default=0.1, help="label_smoothing of the extra rDPO row")
    parser.add_argument("--hinge-beta", type=float, default=1.0, help="beta of the extra hinge row (clips some pairs)")
    parser.add_argument("--noise", type=float, default=None,
                        help="policy = reference + noise*std(w)*N(0,1) per weight (default 1.0 tiny, 0.02 real)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--out", default=str(RESULTS / "dpo_vs_trl.json"))
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- setup


def perturbed_copy(model, noise: float, seed: int):
    """A copy of `model` with w += noise * std(w) * N(0, 1) on every parameter tensor.

    Tied weights are one tensor and are perturbed once; a constant tensor (std 0, e.g. the
    norm weights of a fresh random model) is left as it is.
    """
    import torch

    policy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in policy.named_parameters():  # deduplicates tied parameters
            if param.numel() > 1:
                scale = param.float().std()
                step = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.add_((noise * scale * step).to(param.dtype))
    return policy


def load_models(args):
    """(reference, policy, tokenizer, description)."""
    from alignloop.models import build_tiny_causal_lm, load_model_and_tokenizer

    if args.tiny:
        reference, tokenizer = build_tiny_causal_lm(seed=args.seed)
        name = "tiny random Llama (build_tiny_causal_lm, 2 layers, hidden 64) + SmolLM2 tokenizer"
    else:
        reference, tokenizer = load_model_and_tokenizer(BUILTIN, dtype="float32", attn_implementation="sdpa")
        name = BUILTIN
    reference.eval().requires_grad_(False)
    policy = perturbed_copy(reference, args.noise, args.seed).eval()
    info = {
        "name": name,
        "parameters": sum(p.numel() for p in reference.parameters()),
        "dtype": str(next(reference.parameters()).dtype).removeprefix("torch."),
        "attn_implementation": reference.config._attn_implementation,
        "policy": {"method": "reference + noise * std(w) * N(0,1) per parameter tensor", "noise": args.noise,
                   "seed": args.seed},
    }
    return reference, policy, tokenizer, info


def read_pairs(args, tokenizer):
    from alignloop.data import PreferencePair, encode_preference_records, read_records
    from alignloop.data.preference_config import PreferenceRecords

    records = read_records(args.data, PreferencePair)[: args.pairs]
    encoded, report = encode_preference_records(tokenizer, PreferenceRecords(pairs=records), max_length=args.max_length)
    if len(encoded.pairs) != len(records) or report.truncated:
        raise SystemExit(f"encoding dropped or truncated pairs ({report}); raise --max-length")
    return records, encoded.pairs


# ----------------------------------------------------------------------------- alignloop


def alignloop_side(reference, policy, tokenizer, pairs, cases):
    import torch

    from alignloop.algorithms.dpo import DPOMethod, DPOSettings, collate_with_reference, precompute_reference, split_rows
    from alignloop.engine import TrainConfig, make_accelerator
    from alignloop.losses import dpo_ipo
    from alignloop.models.forward import response_logps

    accelerator = make_accelerator(TrainConfig())
    items = precompute_reference(reference, pairs, tokenizer.pad_token_id, batch_size=len(pairs), accelerator=accelerator)
    batch = collate_with_reference(items, tokenizer.pad_token_id)
    count = len(pairs)
    results = {}
    with torch.no_grad():
        logps, lengths = response_logps(policy, batch)
        for case in cases:
            beta = case["beta"]
            if case["alignloop"] == "ipo_length_normalised":
                # TRL's IPO formula through alignloop's dpo_ipo: per-token average log-probs.
                chosen_len, rejected_len = split_rows(lengths.clamp(min=1).to(logps.dtype))
                chosen, rejected = split_rows(logps)
                loss_sum, _ = dpo_ipo(chosen / chosen_len, rejected / rejected_len,
                                      batch["reference_chosen_logps"] / chosen_len,
                                      batch["reference_rejected_logps"] / rejected_len, beta=beta)
                results[case["key"]] = {"loss": loss_sum.item() / count}
                continue
            settings = DPOSettings(loss=case["alignloop"], beta=beta, label_smoothing=case["label_smoothing"])
            out = DPOMethod(settings).loss(policy, batch)  # the trainer's call: sums over the pairs
            values = {"loss": out.loss_sum.item() / count}
            values.update({name: out.metric_sums[name].item() / count for name in METRICS})
            results[case["key"]] = values
    chosen, rejected = split_rows(logps)
    chosen_len, rejected_len = split_rows(lengths)
    per_pair = {
        "policy_chosen": chosen.tolist(), "policy_rejected": rejected.tolist(),
        "reference_chosen": batch["reference_chosen_logps"].tolist(),
        "reference_rejected": batch["reference_rejected_logps"].tolist(),
        "chosen_tokens": chosen_len.tolist(), "rejected_tokens": rejected_len.tolist(),
    }
    return batch, results, per_pair


# ----------------------------------------------------------------------------- TRL


def trl_dataset(records):
    from datasets import Dataset

    from alignloop.data.schemas import prompt_messages

    rows = []
    for record in records:
        prompt = [{"role": m.role, "content": m.content} for m in prompt_messages(record.prompt)]
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": record.chosen}],
                     "rejected": [{"role": "assistant", "content": record.rejected}]})
    return Dataset.from_list(rows)


def make_trainer(reference, policy, tokenizer, dataset, loss_type, beta, label_smoothing, out_dir, count):
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(
        output_dir=out_dir, loss_type=[loss_type], beta=beta, label_smoothing=label_smoothing,
        per_device_train_batch_size=count, per_device_eval_batch_size=count, max_length=None,
        bf16=False, fp16=False, gradient_checkpointing=False, report_to=[], disable_tqdm=True,
        use_cpu=True, dataloader_num_workers=0, seed=0,
    )
    # Fresh copies per trainer: DPOTrainer patches the forward of both models (fused LM head)
    # and writes the pad token into their configs.
    from transformers import PrinterCallback

    trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), args=config,
                         train_dataset=dataset, eval_dataset=dataset, processing_class=copy.deepcopy(tokenizer))
    trainer.remove_callback(PrinterCallback)  # evaluate() would print its metrics dict
    return trainer


def check_tokenization(trainer, alignloop_batch, pairs):
    """Compare TRL's own tokenization and collation with alignloop's; returns (identical, details, trl_batch)."""
    import torch

    problems = []
    prepared = trainer.eval_dataset
    for index, pair in enumerate(pairs):
        prompt_len = pair.chosen.labels.count(-100)
        example = prepared[index]
        expected = {
            "prompt_ids": pair.chosen.input_ids[:prompt_len],
            "chosen_ids": pair.chosen.input_ids[prompt_len:],
            "rejected_ids": pair.rejected.input_ids[pair.rejected.labels.count(-100):],
        }
        if pair.rejected.input_ids[:prompt_len] != expected["prompt_ids"]:
            problems.append(f"pair {index}: alignloop's chosen and rejected prompts differ")
        for key, ids in expected.items():
            if list(example[key]) != ids:
                problems.append(f"pair {index}: {key} differ (TRL {len(example[key])} ids, alignloop {len(ids)})")
    trl_batch = trainer.data_collator([prepared[i] for i in range(len(pairs))])
    ours = {"input_ids": alignloop_batch["input_ids"], "attention_mask": alignloop_batch["attention_mask"],
            "completion_mask": (alignloop_batch["labels"] != -100).long()}
    for key, tensor in ours.items():
        theirs = trl_batch[key]
        if theirs.shape != tensor.shape or not torch.equal(theirs.long(), tensor.long()):
            problems.append(f"collated {key} differ: TRL {tuple(theirs.shape)}, alignloop {tuple(tensor.shape)}")
    tokens = int(alignloop_batch["attention_mask"].sum())
    details = {"identical": not problems, "problems": problems, "batch_shape": list(alignloop_batch["input_ids"].shape),
               "tokens": tokens, "completion_tokens": int(ours["completion_mask"].sum())}
    return not problems, details, trl_batch


def alignloop_ids_dataset(alignloop_batch):
    """TRL's tokenized columns rebuilt from alignloop's batch (used only if the ids differ)."""
    from datasets import Dataset

    half = alignloop_batch["input_ids"].shape[0] // 2
    rows = []
    for i in range(half):
        c_mask, r_mask = alignloop_batch["attention_mask"][i].bool(), alignloop_batch["attention_mask"][half + i].bool()
        c_ids, r_ids = alignloop_batch["input_ids"][i][c_mask].tolist(), alignloop_batch["input_ids"][half + i][r_mask].tolist()
        c_labels = alignloop_batch["labels"][i][c_mask].tolist()
        prompt_len = c_labels.count(-100)
        rows.append({"prompt_ids": c_ids[:prompt_len], "chosen_ids": c_ids[prompt_len:], "rejected_ids": r_ids[prompt_len:]})
    return Dataset.from_list(rows)


def trl_side(reference, policy, tokenizer, records, pairs, alignloop_batch, cases):
    import torch

    dataset = trl_dataset(records)
    count = len(pairs)
    results, per_pair, tokenization, override = {}, None, None, None
    with tempfile.TemporaryDirectory() as out_dir:
        for case in cases:
            if case["trl"] is None or case["trl_key"] in results:
                continue
            trainer = make_trainer(reference, policy, tokenizer, dataset, case["trl"], case["beta"],
                                   case["label_smoothing"], out_dir, count)
            if tokenization is None:  # once: the tokenization does not depend on the loss
                identical, tokenization, trl_batch = check_tokenization(trainer, alignloop_batch, pairs)
                if not identical:
                    override = alignloop_ids_dataset(alignloop_batch)
                    trl_batch = trainer.data_collator([override[i] for i in range(count)])
                with torch.no_grad():
                    policy_c, policy_r = trainer.compute_ref_log_probs(trainer.model, trl_batch)
                    ref_c, ref_r = trainer.compute_ref_log_probs(trainer.ref_model, trl_batch)
                per_pair = {"policy_chosen": policy_c.tolist(), "policy_rejected": policy_r.tolist(),
                            "reference_chosen": ref_c.tolist(), "reference_rejected": ref_r.tolist()}
            if override is not None:
                trainer.eval_dataset = override
            metrics = trainer.evaluate()
            values = {"loss": metrics["eval_loss"]}
            values.update({name: metrics[f"eval_{trl_name}"] for name, trl_name in METRICS.items()})
            results[case["trl_key"]] = values
            del trainer
    return results, per_pair, tokenization


# ----------------------------------------------------------------------------- comparison


def loss_cases(beta: float, robust_eps: float, hinge_beta: float) -> list[dict]:
    """Each row: alignloop's loss, TRL's loss_type, beta, label smoothing, and which numbers are checked."""
    cases = [
        {"key": "sigmoid", "alignloop": "sigmoid", "trl": "sigmoid", "label_smoothing": 0.0},
        {"key": "robust", "alignloop": "robust", "trl": "robust", "label_smoothing": 0.0},
        {"key": f"robust ε={robust_eps:g}", "alignloop": "robust", "trl": "robust", "label_smoothing": robust_eps},
        {"key": "hinge", "alignloop": "hinge", "trl": "hinge", "label_smoothing": 0.0},
        # beta * h > 1 on some pairs only at a larger beta: checks the clipped side of the hinge too.
        {"key": f"hinge β={hinge_beta:g}", "alignloop": "hinge", "trl": "hinge", "label_smoothing": 0.0,
         "beta": hinge_beta},
        {"key": "ipo", "alignloop": "ipo", "trl": "ipo", "label_smoothing": 0.0,
         "unchecked": {"loss": "by design: TRL divides IPO log-ratios by completion length, alignloop sums"}},
        {"key": "ipo (length-normalised)", "alignloop": "ipo_length_normalised", "trl": "ipo", "label_smoothing": 0.0,
         "only": ["loss"]},
    ]
    for case in cases:
        case.setdefault("beta", beta)
        case["trl_key"] = f"{case['trl']} beta={case['beta']:g} eps={case['label_smoothing']:g}"
    return cases


# Quantities computed from differences of summed log-probs (policy - reference, chosen - rejected):
# their float32 error follows the size of the log-probs, not their own size (see `tolerance`).
FROM_LOG_RATIOS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins")


def tolerance(value: float, rtol: float, atol: float, scale: float = 0.0) -> float:
    """atol + rtol * max(|value|, scale)."""
    return atol + rtol * max(abs(value), scale)


def compare(a: float, t: float, rtol: float, atol: float, scale: float = 0.0) -> dict:
    diff, allowed = abs(a - t), tolerance(t, rtol, atol, scale)
    return {"alignloop": a, "trl": t, "abs_diff": diff, "rel_diff": diff / abs(t) if t else (0.0 if not diff else None),
            "allowed": allowed, "ok": bool(diff <= allowed)}


def build_report(cases, ours, theirs, per_pair_ours, per_pair_theirs, args):
    keys = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")
    logp_scale = sum(abs(x) for key in keys for x in per_pair_ours[key]) / sum(len(per_pair_ours[k]) for k in keys)
    losses = {}
    for case in cases:
        a, t = ours[case["key"]], theirs[case["trl_key"]]
        rows = {}
        for name in (case.get("only") or ["loss", *METRICS]):
            scale = case["beta"] * logp_scale if name in FROM_LOG_RATIOS else 0.0
            row = compare(a[name], t[name], args.rtol, args.atol, scale)
            reason = case.get("unchecked", {}).get(name)
            row["checked"] = reason is None
            if reason:
                row["note"] = reason
            rows[name] = row
        losses[case["key"]] = {"alignloop_loss": case["alignloop"], "trl_loss_type": case["trl"], "beta": case["beta"],
                               "label_smoothing": case["label_smoothing"], "metrics": rows}
    per_pair = []
    args.logp_scale = logp_scale
    for i in range(len(per_pair_ours["policy_chosen"])):
        entry = {"pair": i, "chosen_tokens": per_pair_ours["chosen_tokens"][i],
                 "rejected_tokens": per_pair_ours["rejected_tokens"][i]}
        for key in ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected"):
            entry[key] = compare(per_pair_ours[key][i], per_pair_theirs[key][i], args.rtol, args.atol)
            entry[key]["checked"] = True
        per_pair.append(entry)
    return losses, per_pair


def show(console, losses, per_pair, tokenization, args, model_info):
    from rich.table import Table

    def fmt(x: float) -> str:
        return f"{x:.6f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3e}"

    tok = "identical" if tokenization["identical"] else "DIFFERENT: " + "; ".join(tokenization["problems"][:3])
    console.print(f"[bold]model[/]: {model_info['name']} ({model_info['parameters']:,} parameters, "
                  f"{model_info['dtype']}); policy noise {args.noise} (seed {args.seed}); {args.pairs} pairs, batch "
                  f"{tokenization['batch_shape']}, {tokenization['completion_tokens']} completion tokens")
    console.print(f"[bold]token ids[/] (TRL's own tokenization and collation vs alignloop's): {tok}")

    table = Table(title="Per-pair summed log-probs: alignloop response_logps (shown) vs TRL compute_ref_log_probs")
    for column in ("pair", "tokens c/r", "policy chosen", "policy rejected", "ref chosen", "ref rejected",
                   "max |Δ| vs TRL", "h = log-ratio margin"):
        table.add_column(column, justify="right")
    for entry in per_pair:
        keys = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")
        worst = max(entry[key]["abs_diff"] for key in keys)
        ok = all(entry[key]["ok"] for key in keys)
        h = (entry["policy_chosen"]["alignloop"] - entry["reference_chosen"]["alignloop"]) - (
            entry["policy_rejected"]["alignloop"] - entry["reference_rejected"]["alignloop"])
        table.add_row(str(entry["pair"]), f"{entry['chosen_tokens']}/{entry['rejected_tokens']}",
                      *(f"{entry[key]['alignloop']:.4f}" for key in keys),
                      ("[green]" if ok else "[red]") + f"{worst:.1e}", f"{h:.3f}")
    console.print(table)

    table = Table(title=f"Batch means (β={args.beta:g} unless the row names one): alignloop DPOMethod.loss vs "
                        "TRL DPOTrainer.evaluate()")
    for column in ("loss", "metric", "alignloop", "TRL", "|Δ|", "rel Δ", "allowed", ""):
        table.add_column(column, justify="right" if column not in ("loss", "metric", "") else "left")
    for key, entry in losses.items():
        first = True
        for name, row in entry["metrics"].items():
            status = ("[green]ok" if row["ok"] else "[red]FAIL") if row["checked"] else "[yellow]differs by design"
            table.add_row(key if first else "", name, fmt(row["alignloop"]), fmt(row["trl"]),
                          f"{row['abs_diff']:.2e}", "-" if row["rel_diff"] is None else f"{row['rel_diff']:.2e}",
                          f"{row['allowed']:.1e}", status)
            first = False
        table.add_section()
    console.print(table)
    console.print(f"tolerance: |alignloop - TRL| <= {args.atol:g} + {args.rtol:g} * max(|TRL|, S); S = 0 for logps/* "
                  f"and accuracy, S = β·L for the loss and rewards/*, L = {args.logp_scale:.1f} the mean |summed "
                  "log-prob| of the batch (they are differences of such sums)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.noise is None:
        args.noise = 1.0 if args.tiny else 0.02
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")
    try:
        import trl
    except ImportError:
        print("TRL is not installed: pip install -r benchmarks/requirements-trl.txt (benchmarks only)", file=sys.stderr)
        return 2
    import datasets
    import torch
    import transformers
    from rich.console import Console

    from alignloop.engine.run_dir import machine_description, package_versions

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    console = Console() if sys.stdout.isatty() else Console(width=132)
    start = time.perf_counter()

    reference, policy, tokenizer, model_info = load_models(args)
    records, pairs = read_pairs(args, tokenizer)
    cases = loss_cases(args.beta, args.robust_eps, args.hinge_beta)
    batch, ours, per_pair_ours = alignloop_side(reference, policy, tokenizer, pairs, cases)
    theirs, per_pair_theirs, tokenization = trl_side(reference, policy, tokenizer, records, pairs, batch, cases)
    losses, per_pair = build_report(cases, ours, theirs, per_pair_ours, per_pair_theirs, args)

    show(console, losses, per_pair, tokenization, args, model_info)
    failures = [f"{key}/{name}" for key, entry in losses.items() for name, row in entry["metrics"].items()
                if row["checked"] and not row["ok"]]
    failures += [f"pair {e['pair']}/{k}" for e in per_pair for k in
                 ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected") if not e[k]["ok"]]
    if not tokenization["identical"]:
        failures.append("token ids")
    notes = [
        "IPO: TRL divides each log-ratio by the completion length before (h - 1/(2 beta))^2; alignloop's dpo_ipo uses "
        "summed log-probs (IPO paper eq. 17), so the 'ipo' loss differs by design and is not checked; "
        "'ipo (length-normalised)' feeds dpo_ipo per-token averages and must match TRL.",
        "TRL's sigmoid ignores label_smoothing (no cDPO in TRL 1.16); alignloop's sigmoid with label_smoothing > 0 "
        "(cDPO) has no TRL counterpart and is not compared.",
        "alignloop numbers are LossOutput sums divided by the number of pairs; TRL's are its logged batch means.",
    ]
    for note in notes:
        console.print(f"[dim]note: {note}")

    versions = package_versions()
    versions["trl"] = metadata.version("trl")
    versions["datasets"] = datasets.__version__
    report = {
        "benchmark": "dpo_vs_trl",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "versions": versions,
        "machine": machine_description(),
        "model": model_info,
        "data": {"file": os.path.relpath(args.data, ROOT), "pairs": len(pairs), **tokenization},
        "beta": args.beta,
        "tolerance": {"rtol": args.rtol, "atol": args.atol, "logp_scale_L": args.logp_scale,
                      "rule": "|alignloop - trl| <= atol + rtol * max(|trl|, S); S = 0 for logps/* and accuracy, "
                              "S = beta * L for loss and rewards/*, L = mean |summed log-prob| of the batch"},
        "trl_code_paths": [
            "DPOTrainer.__init__ / _prepare_dataset (apply_chat_template tokenization, common-prefix split)",
            "DataCollatorForPreference", "add_fused_lm_head (chunked log-softmax) on policy and ref_model",
            "DPOTrainer._compute_loss via Trainer.evaluate (loss variants, rewards/* and logps/* metrics)",
            "DPOTrainer.compute_ref_log_probs (per-pair summed log-probs of policy and reference)",
        ],
        "per_pair_logps": per_pair,
        "losses": losses,
        "notes": notes,
        "failures": failures,
        "passed": not failures,
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    verdict = "[bold green]PASS[/]" if not failures else f"[bold red]FAIL[/] ({', '.join(failures)})"
    console.print(f"{verdict}; written to {out} in {report['seconds']} s")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
