"""TRL's argument names (its `TrainingArguments` and trainer configs) and the alignloop recipe
keys that mean the same, for users who arrive with TRL habits.

A recipe or override with a TRL name (`learning_rate=1e-4`) is an unknown key in alignloop; the
config error then names the key it means (`train.lr`). Where TRL's one name covers keys of
several methods (`beta` is DPO's β and GRPO's KL weight), every candidate is listed and the
error keeps those that exist in the recipe being validated. The README's table is made from
`TRL_KEYS` too.
"""

from __future__ import annotations

__all__ = ["TRL_KEYS"]

# TRL name -> alignloop keys (dotted from the recipe's top level), most common first.
TRL_KEYS: dict[str, tuple[str, ...]] = {
    "model_name_or_path": ("model.name",),
    "learning_rate": ("train.lr",),
    "per_device_train_batch_size": ("train.batch_size",),
    "gradient_accumulation_steps": ("train.grad_accum",),
    "num_train_epochs": ("train.epochs",),
    "max_steps": ("train.max_steps",),
    "lr_scheduler_type": ("train.schedule",),
    "warmup_steps": ("train.warmup_steps",),
    "warmup_ratio": ("train.warmup_ratio",),
    "weight_decay": ("train.weight_decay",),
    "adam_beta1": ("train.adam_betas",),
    "adam_beta2": ("train.adam_betas",),
    "adam_epsilon": ("train.adam_eps",),
    "max_grad_norm": ("train.max_grad_norm",),
    "bf16": ("train.mixed_precision",),
    "fp16": ("train.mixed_precision",),
    "seed": ("train.seed",),
    "output_dir": ("train.output_dir",),
    "logging_steps": ("train.log_every",),
    "eval_steps": ("train.eval_every",),
    "save_steps": ("train.save_every",),
    "save_total_limit": ("train.save_total_limit",),
    "report_to": ("train.report_to",),
    "gradient_checkpointing": ("model.gradient_checkpointing",),
    "use_peft": ("model.lora",),
    "lora_r": ("model.lora.r",),
    "lora_alpha": ("model.lora.alpha",),
    "lora_dropout": ("model.lora.dropout",),
    "lora_target_modules": ("model.lora.target_modules",),
    "dataset_name": ("data.train",),
    "dataset_config": ("data.name",),
    "dataset_train_split": ("data.split",),
    "dataset_test_split": ("data.eval_split",),
    "max_length": ("data.max_length",),
    "max_prompt_length": ("data.max_prompt_length",),
    "packing": ("data.packing",),
    "beta": ("dpo.beta", "group.kl_coef", "ppo.kl_coef"),
    "loss_type": ("dpo.loss",),
    "label_smoothing": ("dpo.label_smoothing",),
    "simpo_gamma": ("dpo.simpo_gamma",),
    "num_generations": ("group.group_size",),
    "num_iterations": ("group.num_iterations",),
    "epsilon": ("group.clip_range", "ppo.clip_range"),
    "max_completion_length": ("sampling.max_new_tokens",),
    "temperature": ("sampling.temperature",),
    "top_p": ("sampling.top_p",),
    "top_k": ("sampling.top_k",),
    "kl_coef": ("ppo.kl_coef", "group.kl_coef"),
    "num_ppo_epochs": ("ppo.epochs",),
    "num_mini_batches": ("ppo.num_minibatches",),
    "cliprange": ("ppo.clip_range",),
    "cliprange_value": ("ppo.value_clip_range",),
    "vf_coef": ("ppo.vf_coef",),
    "gamma": ("ppo.gamma",),
    "lam": ("ppo.lam",),
    "whiten_rewards": ("ppo.whiten_rewards",),
    "missing_eos_penalty": ("ppo.missing_eos_penalty", "group.missing_eos_penalty"),
    "response_length": ("sampling.max_new_tokens",),
}
