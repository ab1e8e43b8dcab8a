"""Training-step speed of alignloop next to Hugging Face TRL 1.16: SFT, reward model and DPO,
with LoRA and with full fine-tuning, on the same model, data, batches, lengths and precision.

    pip install -r benchmarks/requirements-trl.txt     # optional, benchmarks only
    python benchmarks/roofline.py                      # optional: adds the "% of peak" column
    python benchmarks/train_vs_trl.py --tiny           # tiny random Llama, a few minutes
    python benchmarks/train_vs_trl.py                  # built-in SmolLM2-135M-Instruct
    python benchmarks/train_vs_trl.py --methods sft,dpo --modes lora --steps 10 --repeats 3

The setup, identical on both sides:

- Model: the built-in SmolLM2-135M-Instruct in float32 (`--tiny`: a random
  2-layer Llama with the SmolLM2 tokenizer, saved to a temporary folder). Both libraries load the
  same folder: alignloop through its loader, TRL's SFT and DPO through the same loader
  (`load_model_and_tokenizer`, no LoRA), TRL's reward model through
  `AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)` (TRL's RewardTrainer
  requires that class). `--modes`: `lora` (r=16, alpha=32, dropout 0, all linear layers; TRL gets
  the same `peft.LoraConfig` as `peft_config`) and `full` (every weight trains).
- Attention: TRL gets transformers' default, sdpa; alignloop its own default, `auto` (sdpa, but
  matmul attention when training on short sequences on CPU: alignloop/models/attention.py).
  `--attention sdpa` gives alignloop sdpa as well, which is how that lever is measured.
- Padding: alignloop runs a padded batch padding-free by default (one row of its real tokens,
  alignloop/models/padding_free.py); TRL computes the padding too (its own `padding_free` needs
  flash attention, a GPU kernel). `--no-padding-free` turns alignloop's off.
- Shared prompts: in a packed batch alignloop computes the prompt of a pair's chosen and rejected
  reply once (their longest common prefix of token ids; alignloop/models/padding_free.py), for
  RM and DPO; TRL runs it in both rows. Here that is 28 % of the pairs' real tokens.
  `--no-share-prefixes` turns it off. Tokens/s counts every row's tokens on both sides.
- Memory: alignloop's trainer asks glibc malloc to keep freed memory in the process
  (`train.retain_freed_memory`, alignloop/engine/memory.py) so that each step does not map its
  buffers afresh; TRL runs with the C library's defaults. `--no-retain-freed-memory` turns it off.
- Data: the first `--steps` × `--batch-size` records (all 120 at most) of
  recipes/data/calm-replies-sft.jsonl (SFT) or recipes/data/calm-pairs.jsonl (reward model, DPO),
  rendered with the SmolLM2 chat template. No truncation happens at the default `--max-length`
  256 (the longest sequence is 127 tokens); with a shorter one both sides keep the prompt and cut
  the response tail (alignloop `overlong: truncate`; TRL `truncation_mode="keep_start"` on the
  same ids).
- Token ids: alignloop encodes the records (its recipes' code path). TRL's SFTTrainer and
  RewardTrainer are given THESE ids (`input_ids` + `labels`, resp. `chosen_ids` + `rejected_ids`:
  their documented pre-tokenized path, which skips their own tokenization), so lengths are equal
  by construction; TRL's RewardTrainer would otherwise DROP pairs longer than max_length where
  alignloop truncates them. TRL's DPOTrainer has no pre-tokenized path and tokenizes the
  conversational records itself (chat template, prompt split at the common prefix); the worker
  checks that its ids equal alignloop's and the json says so (`trl_ids_identical`).
- Batches: alignloop shuffles with its own seeded order (`epoch_order`); TRL is given the rows in
  exactly that order with `train_sampling_strategy="sequential"`, so step k of both libraries
  trains on the same examples. Both collate a batch padded on the right to its longest sequence,
  with an attention mask (see Padding above); no packing of several examples into one row
  (alignloop `data.packing: false`; TRL `packing=False, padding_free=False`). The parent checks
  that the non-pad tokens of every step are equal on both sides (`same_tokens` in the json).
- Optimizer: `--steps` optimizer steps of `--batch-size` sequences (pairs for RM and DPO), no
  gradient accumulation; fused AdamW with the recipe's learning rate (SFT 2e-4, RM 1e-4, DPO
  5e-5), weight decay 0, betas (0.9, 0.999), eps 1e-8, gradient clipping at 1.0, and a constant
  learning rate without warmup on both sides (instead of the recipes' cosine with warmup).
- Precision: bf16 autocast on CPU (alignloop `train.mixed_precision=bf16`, TRL `bf16=True`) with
  float32 weights; `--precision no` runs float32 on both.
- Nothing else: no evaluation, no checkpoints (TRL `save_strategy="no"`; alignloop
  `save_every: null`), no gradient checkpointing (TRL 1.x turns it ON by default: set to False, as
  alignloop's default), no dropout (LoRA dropout 0; SmolLM2 and the tiny Llama have attention
  dropout 0; TRL's RewardTrainer and DPOTrainer also get `disable_dropout=True`), no
  external loggers (TRL `report_to=[]`, no progress bar and no console printer; alignloop writes
  its local metrics.jsonl, which is how its step times are read), logging every step on both.

What each side computes per step:

- sft: alignloop `run_sft` (recipes/sft-smollm2.yaml + overrides): completion-only summed NLL
  divided by the step's response tokens, the output layer applied to response positions only.
  TRL `SFTTrainer`: the same loss through its fused LM head (response positions only, in tiles),
  which also computes per-token entropy and top-1 accuracy for its logged metrics (TRL's
  default, kept).
- rm: alignloop `run_reward` (recipes/rm-hh-smollm2.yaml, data replaced by the calm pairs,
  `max_prompt_length: null`): Bradley-Terry loss on the score read at the last real token of each
  of the 2B rows (chosen and rejected in one forward pass), float32 linear head with bias.
  TRL `RewardTrainer`: the same loss on `LlamaForSequenceClassification` (score head without
  bias; with LoRA, peft trains the head fully as `modules_to_save`), 2B rows in one pass.
  alignloop's post-training normalisation pass is switched off (`reward.normalization_samples=0`).
- dpo: sigmoid loss, beta 0.1, chosen and rejected in one forward pass on both sides. Reference:
  alignloop's default `dpo.reference: precompute` (reference log-probs computed once before
  training, none per step); TRL is matched with `precompute_ref_log_probs=True` (also done before
  training, in `DPOTrainer.__init__`; TRL then keeps no reference model either).

Measurements: every (library, method, mode) runs in its own child process, `--repeats` times,
the order rotated on each repeat so that slow spells of a shared machine hit every
configuration alike. A step's time is the wall time between the ends of consecutive optimizer
steps (alignloop: the timestamps of its per-step metrics records; TRL: a `TrainerCallback`'s
`on_step_end`), so step 1 with its warm-up is not counted, nor is anything before it (model
loading, tokenization, reference precompute) or after the last step (alignloop saves its final
model then). Tokens per step are the non-pad tokens fed (attention-mask sum over all rows:
alignloop's `train/tokens_seen`, TRL counted in its data collator). Peak RSS is the child's
`ru_maxrss`. The table shows the median s/step over all counted steps of all repeats, tokens/s =
the median over counted steps of tokens/time, the largest peak RSS, and alignloop / TRL
throughput per (method, mode) measured in this one run (> 1: alignloop is faster).

"% of peak": if benchmarks/results/<cpu>/roofline.json exists (benchmarks/roofline.py, or `--roofline`),
6 × N × tokens/s over the machine's measured matmul peak of the run's precision (bf16 peak for
`--precision bf16`, float32 peak for `no`), N the TOTAL parameter count of the trained network
(trainable or not, tied embeddings once), the same N-rule for LoRA and full runs (LoRA does less
real work per token: no weight gradients for frozen weights), so it is a rough utilisation guide.

As a check that both sides really train the same thing, the json keeps every step's loss: SFT
and DPO agree to about 1e-4 from the same weights and batches (RM does not: the two reward heads
start from different random weights). It also records the machine (CPU model, cores, RAM), the
versions of torch, transformers, peft, trl, accelerate and datasets, and alignloop's git commit.
Note that `--steps` × `--batch-size` picks the data subset, so runs with other values train on
other batches.

Results: benchmarks/results/<cpu>/train_vs_trl.json (or `--out`), a markdown table next to it (.md) and
a bar plot of the alignloop / TRL ratios (.png).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # roofline.py
from roofline import results_dir, with_precision_resolved  # noqa: E402  (benchmarks/results/<cpu>/)

RESULTS = results_dir()
DATA = {"sft": ROOT / "recipes/data/calm-replies-sft.jsonl", "rm": ROOT / "recipes/data/calm-pairs.jsonl",
        "dpo": ROOT / "recipes/data/calm-pairs.jsonl"}
RECIPES = {"sft": ROOT / "recipes/sft-smollm2.yaml", "rm": ROOT / "recipes/rm-hh-smollm2.yaml",
           "dpo": ROOT / "recipes/dpo-hh-smollm2.yaml"}
METHODS = ("sft", "rm", "dpo")
MODES = ("lora", "full")
LIBRARIES = ("alignloop", "trl")
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
BUILTIN = "smollm2-135m-instruct"


def comma_list(choices):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose a comma-separated list of {', '.join(choices)}")
        return list(dict.fromkeys(items))

    return parse


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", type=comma_list(METHODS), default=list(METHODS), help="sft,rm,dpo")
    parser.add_argument("--modes", type=comma_list(MODES), default=list(MODES), help="lora,full")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every configuration")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences (SFT) or pairs (RM, DPO) per step")
    parser.add_argument("--max-length", type=int, default=256, help="longest sequence in tokens (prompt + response)")
    parser.add_argument("--tiny", action="store_true", help="tiny random Llama instead of SmolLM2-135M")
    parser.add_argument("--precision", choices=["auto", "bf16", "no"], default="auto",
                        help="bf16 autocast or float32 on both sides; auto: what this CPU runs fast (alignloop/hardware.py), "
                        "so that TRL too runs at its best setting here")
    parser.add_argument("--attention", default="auto",
                        help="alignloop's model.attn_implementation (TRL always gets transformers' default, sdpa)")
    parser.add_argument("--no-padding-free", dest="padding_free", action="store_false",
                        help="alignloop runs padded batches as they are (model.padding_free=false)")
    parser.add_argument("--no-share-prefixes", dest="share_prefixes", action="store_false",
                        help="alignloop computes a pair's prompt in both rows (model.share_prefixes=false)")
    parser.add_argument("--no-retain-freed-memory", dest="retain_freed_memory", action="store_false",
                        help="alignloop returns freed memory to the OS as glibc does by default "
                        "(train.retain_freed_memory=false)")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_vs_trl.json",
                        help="results json; the .md table and .png plot are written next to it")
    parser.add_argument("--roofline", type=Path, default=RESULTS / "roofline.json",
                        help="benchmarks/roofline.py results, for the %% of peak column (skipped if missing)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    if args.repeats < 1 or args.batch_size < 1 or args.max_length < 2:
        parser.error("--repeats, --batch-size and --max-length must be positive")
    return with_precision_resolved(args)


# ----------------------------------------------------------------------------- shared setup
def subset_file(method: str, count: int, work: Path) -> Path:
    """The first `count` records of the method's data file, as a jsonl file in `work`."""
    lines = [line for line in DATA[method].read_text(encoding="utf-8").splitlines() if line.strip()][:count]
    path = work / f"{method}-data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def alignloop_config(args: argparse.Namespace, method: str, mode: str, work: Path):
    """The recipe of `method` with this benchmark's model, data, sizes and settings: what
    alignloop runs, and where the TRL side reads its hyperparameters from."""
    from alignloop.config import load_config

    data = subset_file(method, args.steps * args.batch_size, work)
    overrides = [
        f"model.name={args.model_dir}", f"train.output_dir={work / 'run'}", f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch_size}", "train.grad_accum=1", f"train.mixed_precision={args.precision}",
        "train.schedule=constant", "train.warmup_steps=0", "train.weight_decay=0.0", "train.max_grad_norm=1.0",
        "train.progress=false", "train.report_to=[jsonl]", "train.eval_every=null", "train.save_every=null",
        "train.eval_on_start=false", "train.log_every=1", "train.seed=0", f"data.max_length={args.max_length}",
        f"train.retain_freed_memory={str(args.retain_freed_memory).lower()}",
        "model.dtype=float32", f"model.attn_implementation={args.attention}",
        f"model.padding_free={str(args.padding_free).lower()}", f"model.share_prefixes={str(args.share_prefixes).lower()}",
        "model.gradient_checkpointing=false",
    ]
    overrides.append("model.lora=null" if mode == "full" else
                     f"model.lora={{r: {LORA['r']}, alpha: {LORA['alpha']}, dropout: {LORA['dropout']}, "
                     f"target_modules: {LORA['target_modules']}}}")
    if method == "sft":
        from alignloop.algorithms.sft import SFTConfig as cls

        overrides += [f"data.train={data}", "data.eval=null", "data.overlong=truncate", "data.packing=false",
                      "save_merged=false"]
    else:
        overrides += [f"data.train=[{data}]", "data.hh_rlhf=false", "data.eval_every_nth=null",
                      "data.max_prompt_length=null"]
        if method == "rm":
            from alignloop.algorithms.reward import RewardConfig as cls

            overrides.append("reward.normalization_samples=0")
        else:
            from alignloop.algorithms.dpo import DPOConfig as cls

            overrides += ["dpo.loss=sigmoid", "dpo.beta=0.1", "dpo.reference=precompute", "save_merged=false"]
    return load_config(cls, RECIPES[method], overrides)


def encoded_items(config, method: str, tokenizer) -> tuple[list, list]:
    """(raw records, encoded training items) exactly as run_sft / run_reward / run_dpo build them."""
    from functools import partial

    if method == "sft":
        from alignloop.data import SFTExample, encode_sft_dataset, read_train_and_eval

        records, _ = read_train_and_eval(config.data, SFTExample)
        items, _ = encode_sft_dataset(tokenizer, records, max_length=config.data.max_length,
                                      overlong=config.data.overlong, use_chat_template=config.data.use_chat_template)
        return records, items
    from alignloop.data import encode_preference_records, read_preference_data

    data = read_preference_data(config.data)
    encode = partial(encode_preference_records, tokenizer, max_length=config.data.max_length,
                     max_prompt_length=config.data.max_prompt_length,
                     use_chat_template=config.data.use_chat_template, on_invalid=config.data.on_invalid)
    if method == "rm":
        from alignloop.algorithms.reward import training_items, with_rating_pairs

        records = with_rating_pairs(data.train, config.reward)
        encoded, _ = encode(records)
        return list(records.pairs), training_items(encoded, config.reward)
    from alignloop.algorithms.dpo import all_pairs, replace_pairs

    pairs = all_pairs(data.train)
    encoded, _ = encode(replace_pairs(data.train, pairs))
    return pairs, list(encoded.pairs)


def step_rows(num_items: int, batch_size: int, seed: int, steps: int) -> list[int]:
    """Item indices of every optimizer step, in the order alignloop's Trainer takes them."""
    from alignloop.engine.trainer import epoch_order, micro_batch_indices

    per_epoch = math.ceil(num_items / batch_size)
    rows: list[int] = []
    for step in range(steps):
        epoch, step_in_epoch = divmod(step, per_epoch)
        order = epoch_order(num_items, seed, epoch)
        for batch in micro_batch_indices(order, step_in_epoch, batch_size, world=1, accum=1, rank=0):
            rows.extend(batch)
    return rows


def param_counts(model) -> dict[str, int]:
    from alignloop.models import count_trainable_parameters

    trainable, total = count_trainable_parameters(model)
    return {"trainable": trainable, "total": total}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------- alignloop
def run_alignloop(args: argparse.Namespace, method: str, mode: str, work: Path) -> dict:
    from alignloop.engine import read_metrics

    config = alignloop_config(args, method, mode, work)
    if method == "sft":
        from alignloop.algorithms.sft import run_sft as run
    elif method == "rm":
        from alignloop.algorithms.reward import run_reward as run
    else:
        from alignloop.algorithms.dpo import run_dpo as run
    run(config)
    rss = peak_rss_mb()  # before anything else is loaded
    records = [r for r in read_metrics(work / "run" / "metrics.jsonl") if "train/loss" in r]
    seen = [0.0] + [r["train/tokens_seen"] for r in records]
    tokens = [int(b - a) for a, b in zip(seen, seen[1:])]
    times = [r["time"] for r in records]
    # Parameter counts from the same construction run_* used (after the peak RSS was taken).
    if method == "rm":
        from alignloop.algorithms.reward import freeze_unused_output_layer
        from alignloop.models import build_reward_model

        model, _ = build_reward_model(config.model)
        freeze_unused_output_layer(model)
    else:
        from alignloop.models import load_model_and_tokenizer

        model, _ = load_model_and_tokenizer(config.model)
    return {"step_seconds": [b - a for a, b in zip(times, times[1:])], "step_tokens": tokens,
            "losses": [r["train/loss"] for r in records], "peak_rss_mb": rss, "params": param_counts(model)}


# ----------------------------------------------------------------------------- TRL
def trl_dataset(method: str, records: list, items: list, rows: list[int]):
    """TRL's train dataset, row k = alignloop's item rows[k]: ids for SFT and RM, raw
    conversational records for DPO (DPOTrainer always tokenizes itself)."""
    from datasets import Dataset

    from alignloop.data.schemas import prompt_messages

    if method == "sft":
        return Dataset.from_list([{"input_ids": items[i].input_ids, "labels": items[i].labels} for i in rows])
    if method == "rm":
        return Dataset.from_list([{"chosen_ids": items[i].chosen.input_ids, "rejected_ids": items[i].rejected.input_ids}
                                  for i in rows])

    def conversation(record):
        return {"prompt": [{"role": m.role, "content": m.content} for m in prompt_messages(record.prompt)],
                "chosen": [{"role": "assistant", "content": record.chosen}],
                "rejected": [{"role": "assistant", "content": record.rejected}]}

    return Dataset.from_list([conversation(records[i]) for i in rows])


def dpo_ids_identical(trainer, items: list, rows: list[int], max_length: int) -> bool:
    """Whether TRL's own tokenization (after its collator's truncation) gives alignloop's ids."""
    for k, i in enumerate(rows):
        example = trainer.train_dataset[k]
        for side in ("chosen", "rejected"):
            ids = (list(example["prompt_ids"]) + list(example[f"{side}_ids"]))[:max_length]
            if ids != getattr(items[i], side).input_ids:
                return False
    return True


def run_trl(args: argparse.Namespace, method: str, mode: str, work: Path) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import PrinterCallback, TrainerCallback

    from alignloop.models import load_model_and_tokenizer, load_tokenizer, resolve_model_source

    config = alignloop_config(args, method, mode, work)
    train = config.train
    if method == "rm":
        from transformers import AutoModelForSequenceClassification

        tokenizer = load_tokenizer(args.model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_source(args.model_dir), num_labels=1, dtype=torch.float32, attn_implementation="sdpa")
    else:
        plain = config.model.model_copy(update={"lora": None, "attn_implementation": "sdpa"})
        model, tokenizer = load_model_and_tokenizer(plain)
    records, items = encoded_items(config, method, tokenizer)
    rows = step_rows(len(items), train.batch_size, train.seed, train.max_steps)
    dataset = trl_dataset(method, records, items, rows)

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    settings = dict(
        output_dir=str(work / "run"), per_device_train_batch_size=train.batch_size, gradient_accumulation_steps=1,
        max_steps=train.max_steps, learning_rate=train.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=train.weight_decay, adam_beta1=train.adam_betas[0], adam_beta2=train.adam_betas[1],
        adam_epsilon=train.adam_eps, max_grad_norm=train.max_grad_norm, optim="adamw_torch_fused",
        bf16=args.precision == "bf16", use_cpu=True, gradient_checkpointing=False, max_length=args.max_length,
        train_sampling_strategy="sequential", logging_steps=1, save_strategy="no", eval_strategy="no",
        report_to=[], disable_tqdm=True, seed=train.seed, dataloader_num_workers=0,
    )
    lora = None
    if mode == "lora":
        lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules=LORA["target_modules"], task_type="SEQ_CLS" if method == "rm" else "CAUSAL_LM")
    common = dict(model=model, train_dataset=dataset, processing_class=tokenizer, peft_config=lora,
                  callbacks=[StepClock()])
    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(args=SFTConfig(packing=False, padding_free=False, **settings), **common)
    elif method == "rm":
        from trl import RewardConfig, RewardTrainer

        trainer = RewardTrainer(args=RewardConfig(disable_dropout=True, **settings), **common)
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(args=DPOConfig(
            loss_type=[config.dpo.loss], beta=config.dpo.beta, precompute_ref_log_probs=True,
            precompute_ref_batch_size=config.dpo.reference_batch_size, padding_free=False, disable_dropout=True,
            **settings), **common)
    trainer.remove_callback(PrinterCallback)
    # SFT and RM: TRL was given alignloop's ids (None: identical by construction).
    ids_identical = None if method != "dpo" else dpo_ids_identical(trainer, items, rows, args.max_length)

    fed: list[int] = []
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        fed.append(int(batch["attention_mask"].sum()))
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    rss = peak_rss_mb()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"step_seconds": [b - a for a, b in zip(step_ends, step_ends[1:])], "step_tokens": fed[: train.max_steps],
            "losses": losses, "peak_rss_mb": rss, "params": param_counts(trainer.model),
            "trl_ids_identical": ids_identical}


def worker(args: argparse.Namespace) -> None:
    library, method, mode = args.worker.split("-")
    import warnings

    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        run = run_alignloop if library == "alignloop" else run_trl
        result = run(args, method, mode, Path(tmp))
    args.result.write_text(json.dumps(result))


# ----------------------------------------------------------------------------- driver
def prepare_model_dir(args: argparse.Namespace, tmp: Path) -> str:
    from alignloop.models import load_builtin_tokenizer, prepare_builtin, save_tiny_model

    if args.tiny:
        return str(save_tiny_model(tmp / "tiny-llama", tokenizer=load_builtin_tokenizer(BUILTIN)))
    return str(prepare_builtin(BUILTIN))


def run_worker(args: argparse.Namespace, config: str, model_dir: str, tmp: Path) -> dict:
    result = tmp / f"{config}.json"
    command = [sys.executable, __file__, "--worker", config, "--model-dir", model_dir, "--result", str(result),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--precision", args.precision, "--attention", args.attention]
    command += [] if args.padding_free else ["--no-padding-free"]
    command += [] if args.share_prefixes else ["--no-share-prefixes"]
    command += [] if args.retain_freed_memory else ["--no-retain-freed-memory"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", HF_DATASETS_CACHE=str(tmp / "hf-datasets"),
               TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{config} failed:\n{done.stderr[-4000:]}")
    return json.loads(result.read_text())


def machine() -> dict:
    from roofline import cpu_description

    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024**2, 1)  # kB -> GiB
    except OSError:
        pass
    return {**cpu_description(), "ram_gib": mem_total, "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict:
    found = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "alignloop"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"

    def git(*command: str) -> str | None:
        try:
            return subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    found["alignloop_git_commit"] = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    found["alignloop_git_dirty"] = bool(status) if status is not None else None
    return found


# Where the two sides are not identical, and why (also written to the json and the markdown).
NOTES = [
    "rm: TRL's RewardTrainer requires AutoModelForSequenceClassification (score head without bias, under "
    "autocast, read at the last token that is not the pad id); alignloop's RewardModel is the causal LM's backbone "
    "plus a float32 head with bias outside autocast, read at the last attention-mask position. With the SmolLM2 "
    "tokenizer (pad = <|im_end|>) every sequence ends '<|im_end|>\\n', so both read the same position; the heads "
    "start from different random weights, so RM losses differ while the work per step is the same. With LoRA, peft "
    "trains TRL's score head as modules_to_save (one extra copy of its weights).",
    "dpo: TRL's DPOTrainer has no pre-tokenized input path and tokenizes the conversational records itself; its ids "
    "are checked against alignloop's (trl_ids_identical). SFT and RM: TRL is given alignloop's ids.",
    "sft, dpo: TRL's fused LM head also computes per-token entropy and top-1 accuracy (DPO: and mean logits) for its "
    "logged metrics on every step; these are TRL defaults with no switch and are part of its measured time.",
    "rm, dpo: alignloop computes the prompt shared by a pair's chosen and rejected rows once (model.share_prefixes; "
    "28 % of the real tokens here), TRL in both rows; tokens/s counts every row's tokens on both sides.",
    "alignloop's trainer keeps freed memory in the process (train.retain_freed_memory, glibc mallopt); TRL runs "
    "with the C library's defaults.",
    "Both sides apply the output layer to response positions only, with different kernels (alignloop: one matmul "
    "over the gathered positions, float32 log-softmax; TRL: tiles).",
    "Batches: TRL reads its rows sequentially, pre-ordered as alignloop's seeded shuffle, instead of using its own "
    "RandomSampler, so both train on the same examples at every step.",
    "Untimed and different: alignloop precomputes DPO reference log-probs for every pair of the subset, TRL for its "
    "ordered rows (the same pairs when steps x batch <= 120); alignloop saves its final model after the last step.",
    "% of peak uses 6 x TOTAL parameters per token for LoRA and full runs alike (LoRA skips weight gradients of "
    "frozen weights, and embeddings are a lookup), so it is a rough utilisation figure.",
]


def summarize(runs: dict[str, list[dict]], peaks: dict[str, float] | None, precision: str) -> dict[str, dict]:
    from roofline import achieved_fraction

    summary = {}
    peak_dtype = "bfloat16" if precision == "bf16" else "float32"
    peak = (peaks or {}).get(peak_dtype)
    for config, results in runs.items():
        seconds, rates, tokens = [], [], []
        for result in results:
            timed_tokens = result["step_tokens"][1:]  # step 1 is not timed
            seconds += result["step_seconds"]
            tokens += timed_tokens
            rates += [n / t for n, t in zip(timed_tokens, result["step_seconds"]) if t > 0]
        entry = {
            "median_step_seconds": statistics.median(seconds),
            "median_tokens_per_step": statistics.median(tokens),
            "tokens_per_s": statistics.median(rates),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "params": results[0]["params"],
            "counted_steps": len(seconds),
        }
        if peak:
            entry[f"fraction_of_{peak_dtype}_peak"] = achieved_fraction(entry["params"]["total"], entry["tokens_per_s"], peak)
        summary[config] = entry
    return summary


def comparisons(runs: dict[str, list[dict]], summary: dict[str, dict], methods, modes) -> dict[str, dict]:
    out = {}
    for method in methods:
        for mode in modes:
            ours, theirs = f"alignloop-{method}-{mode}", f"trl-{method}-{mode}"
            if ours not in summary or theirs not in summary:
                continue
            same_tokens = all(a["step_tokens"] == t["step_tokens"] for a in runs[ours] for t in runs[theirs])
            out[f"{method}-{mode}"] = {
                "alignloop_over_trl_throughput": summary[ours]["tokens_per_s"] / summary[theirs]["tokens_per_s"],
                "same_tokens": same_tokens,
                # None: TRL was given alignloop's ids (SFT, RM); True/False: TRL's own DPO tokenization checked.
                "trl_ids_identical": (None if all(r.get("trl_ids_identical") is None for r in runs[theirs])
                                      else all(r.get("trl_ids_identical") for r in runs[theirs])),
                # Same data, weights and optimizer: the per-step losses of the first repeat should agree
                # closely (not for RM: the two reward heads start from different random weights).
                "losses_first_repeat": {"alignloop": runs[ours][0]["losses"], "trl": runs[theirs][0]["losses"]},
            }
    return out


def table_rows(summary, ratios, methods, modes, peak_key):
    rows = []
    for method in methods:
        for mode in modes:
            for library in LIBRARIES:
                entry = summary.get(f"{library}-{method}-{mode}")
                if entry is None:
                    continue
                ratio = ratios.get(f"{method}-{mode}", {}).get("alignloop_over_trl_throughput")
                fraction = entry.get(peak_key)
                rows.append([
                    method, mode, library,
                    f"{entry['params']['trainable'] / 1e6:.2f}M / {entry['params']['total'] / 1e6:.2f}M",
                    f"{entry['median_step_seconds']:.3f}", f"{entry['median_tokens_per_step']:.0f}",
                    f"{entry['tokens_per_s']:.0f}", f"{entry['peak_rss_mb']:.0f}",
                    "-" if fraction is None else f"{100 * fraction:.1f}%",
                    f"{ratio:.2f}x" if (ratio is not None and library == "alignloop") else "",
                ])
    return rows


def write_plot(path: Path, ratios: dict[str, dict], methods, modes, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(methods) * len(modes), 3.6))
    width = 0.8 / len(modes)
    for m_index, mode in enumerate(modes):
        xs, ys = [], []
        for x, method in enumerate(methods):
            entry = ratios.get(f"{method}-{mode}")
            if entry:
                xs.append(x + (m_index - (len(modes) - 1) / 2) * width)
                ys.append(entry["alignloop_over_trl_throughput"])
        bars = ax.bar(xs, ys, width=width * 0.95, label=mode)
        for bar, y in zip(bars, ys):
            ax.annotate(f"{y:.2f}x", (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("alignloop / TRL tokens/s")
    ax.set_title(textwrap.fill(title, 80), fontsize=9)  # the headline is longer than a narrow figure
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rich.console import Console
    from rich.table import Table

    from roofline import load_peaks

    try:
        trl_version = metadata.version("trl")
    except metadata.PackageNotFoundError:
        raise SystemExit("TRL is not installed: pip install -r benchmarks/requirements-trl.txt (benchmarks only)")
    console = Console() if sys.stdout.isatty() else Console(width=150)
    configs = [f"{lib}-{method}-{mode}" for method in args.methods for mode in args.modes for lib in LIBRARIES]
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = prepare_model_dir(args, Path(tmp))
        args.model_dir = model_dir
        for repeat in range(args.repeats):
            shift = repeat % len(configs)
            for config in configs[shift:] + configs[:shift]:
                result = run_worker(args, config, model_dir, Path(tmp))
                runs[config].append(result)
                console.print(f"repeat {repeat + 1}: {config:22s} steps "
                              f"{', '.join(f'{t:.3f}' for t in result['step_seconds'])} s; tokens "
                              f"{result['step_tokens']}; peak RSS {result['peak_rss_mb']:.0f} MB", highlight=False)

    peaks = load_peaks(args.roofline)
    peak_dtype = "bfloat16" if args.precision == "bf16" else "float32"
    peak_key = f"fraction_of_{peak_dtype}_peak"
    summary = summarize(runs, peaks, args.precision)
    ratios = comparisons(runs, summary, args.methods, args.modes)
    model_name = "tiny random Llama (2 layers, hidden 64) + SmolLM2 tokenizer" if args.tiny else BUILTIN
    precision = "bf16 autocast" if args.precision == "bf16" else "float32"
    headline = (f"{model_name}, {precision}, batch {args.batch_size}, max length {args.max_length}, "
                f"{args.steps} steps x {args.repeats} repeats (step 1 not timed)")

    columns = ["method", "mode", "library", "trainable / total params", "median s/step", "tokens/step", "tokens/s",
               "peak RSS MB", f"% of {'bf16' if args.precision == 'bf16' else 'fp32'} peak", "alignloop / TRL"]
    rows = table_rows(summary, ratios, args.methods, args.modes, peak_key)
    table = Table(title=headline)
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "mode", "library") else "right")
    for index, row in enumerate(rows):
        table.add_row(*row, end_section=index % 2 == 1)
    console.print(table)
    problems = [f"{key}: non-pad tokens per step differ" for key, r in ratios.items() if not r["same_tokens"]]
    problems += [f"{key}: TRL's DPO token ids differ from alignloop's" for key, r in ratios.items()
                 if r["trl_ids_identical"] is False]
    for problem in problems:
        console.print(f"[bold red]warning[/]: {problem}")
    if peaks is None:
        console.print(f"[dim]no {args.roofline}: run benchmarks/roofline.py for the % of peak column")

    report = {
        "benchmark": "train_vs_trl",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "model": model_name, "lora": LORA, "modes": args.modes, "methods": args.methods,
        "precision": args.precision, "batch_size": args.batch_size, "max_length": args.max_length,
        "steps_per_run": args.steps, "repeats": args.repeats,
        "alignloop_model": {"attn_implementation": args.attention, "padding_free": args.padding_free,
                            "share_prefixes": args.share_prefixes, "retain_freed_memory": args.retain_freed_memory},
        "data": {m: os.path.relpath(DATA[m], ROOT) for m in args.methods},
        "machine": machine(), "versions": {**versions(), "trl": trl_version},
        "roofline": {"file": str(args.roofline), "peak_flops": peaks,
                     "rule": "6 * total params * tokens/s / measured matmul peak of the run's precision"},
        "summary": summary, "comparisons": ratios, "problems": problems, "notes": NOTES,
        "runs": runs, "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    markdown = [f"# Training step speed: alignloop vs TRL {trl_version}", "", headline + ".", "",
                f"Machine: {report['machine']['cpu_model']}, {report['machine']['cpu_count']} cores, "
                f"{report['machine']['ram_gib']} GiB RAM; torch {report['versions']['torch']}, transformers "
                f"{report['versions']['transformers']}, peft {report['versions']['peft']}, accelerate "
                f"{report['versions']['accelerate']}; alignloop {report['versions']['alignloop_git_commit']}"
                f"{' (uncommitted changes)' if report['versions']['alignloop_git_dirty'] else ''}.", "",
                "| " + " | ".join(columns) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(columns))) + "|"]
    markdown += ["| " + " | ".join(row) + " |" for row in rows]
    markdown += ["", "alignloop / TRL: ratio of tokens/s (> 1: alignloop is faster). % of peak: 6 x total params x "
                 "tokens/s over benchmarks/roofline.py's measured matmul peak." + (" Warnings: " + "; ".join(problems)
                                                                                    if problems else ""), "",
                 "Known differences:", ""] + [f"- {note}" for note in NOTES]
    args.out.with_suffix(".md").write_text("\n".join(markdown) + "\n")
    write_plot(args.out.with_suffix(".png"), ratios, args.methods, args.modes, headline)
    console.print(f"results: {args.out} (+ .md, .png) in {report['seconds']} s")


if __name__ == "__main__":
    main()
