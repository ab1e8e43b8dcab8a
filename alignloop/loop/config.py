"""The loop recipe: what every round does, and the stage recipes it fills in.

A round is generate → feedback → export → reward model → RL → evaluate → report. The reward-model,
RL and evaluation stages take the same settings as their own commands (`alignloop rm train`,
`ppo`, `grpo`, `dpo`, `eval`): the loop recipe holds those recipes minus what the loop decides
itself (the model, the data, the reward, the output folder), so every key documented for a
command works here, and a wrong key is reported when the loop starts, not hours later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from alignloop.config import Section
from alignloop.data.config import SourceSplits
from alignloop.engine.rollout import SamplingConfig
from alignloop.feedback.selection import SELECTIONS
from alignloop.loop.judges import JudgeSettings
from alignloop.loop.recipes import stage_recipe_errors
from alignloop.models import ModelConfig

STEPS = ("generate", "feedback", "export", "reward_model", "rl", "evaluate", "report")


class LoopPrompts(SourceSplits):
    train: str = Field(description="prompts to collect feedback on and to train the policy on (`prompt` records): "
                                   "a file, datasets folder (save_to_disk) or hub dataset id (online)")
    eval: str = Field(description="held-out prompts for the evaluation of every round, in the same forms")
    per_round: int = Field(32, ge=1, description="training prompts sent to feedback in each round (cycling through the file)")
    max_prompt_length: int = Field(128, ge=8, description="prompt tokens kept")


class CandidateSettings(Section):
    k: int = Field(2, ge=2, description="responses generated per prompt by the current policy")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_new_tokens=48),
                                     description="how the candidates are sampled")


class FeedbackSettings(Section):
    source: Literal["scripted", "campaign"] = Field(
        "scripted", description="scripted annotators answer through the API, or wait for people in the web app"
    )
    db: str | None = Field(None, description="feedback database URL (default: sqlite:///<output_dir>/feedback.db)")
    task: Literal["pairwise", "ranking"] = Field(
        "pairwise",
        description="pairwise: two of the K candidates per task; ranking: all K ranked at once (K(K-1)/2 comparisons "
                    "for one reading of the prompt, the reward model learns it listwise)",
    )
    overlap: int = Field(3, ge=1, description="annotators per item")
    guidelines: str = Field(
        "Pick the response you would rather receive: polite and helpful beats rude, insulting or profane.",
        description="shown to every annotator before their first task",
    )
    min_seconds: float = Field(3.0, ge=0, description="answers faster than this are flagged (scripted annotators: 0)")
    gold_items: int = Field(4, ge=0, description="scripted: items with a known answer mixed in (judged by the preference scorer)")
    gold_min_gap: float = Field(0.3, gt=0, description="scripted: smallest preference-score gap that makes a gold item")
    poll_seconds: float = Field(15.0, gt=0, description="campaign: how often to check for new judgements")
    wait_timeout_s: float | None = Field(None, gt=0, description="campaign: stop waiting after this long (null: wait)")
    selection: Literal[SELECTIONS] = Field(
        "uniform", description="which pool items people judge: uniform (at random), uncertainty (where the last round's "
                               "reward-model ensemble disagrees most, BALD), entropy; round 1 is always uniform")
    selection_pool: int = Field(1, ge=1, description="prompts given candidates per prompt judged: the pool selection "
                                                     "chooses per_round from (1: every prompt is judged)")
    judges: list[JudgeSettings] = Field(
        default_factory=list, description="AI judges (loop/judges.py) who annotate through the same API: a local "
                                          "causal LM or an OpenAI-compatible endpoint, each asked both orders")
    route_to_people: int | None = Field(
        None, ge=0, description="with judges: this many items per round (those the reward model is least sure of) go "
                                "to people only, the rest to the judges only; null: everyone may judge every item")
    aggregation: Literal["all", "majority", "weighted", "model"] = Field("weighted", description="how the judgements of one item become one training record")
    exclude_flagged: bool = Field(True, description="leave flagged annotators out of the export")
    annotators: dict[str, Any] = Field(
        default_factory=dict, description="scripted: `alignloop.loop.annotators.AnnotatorsConfig` settings"
    )

    @model_validator(mode="after")
    def _routing_needs_judges(self) -> FeedbackSettings:
        if self.route_to_people is not None and not self.judges:
            raise ValueError("route_to_people sends the other items to AI judges: add one under feedback.judges")
        return self


class RLSettings(Section):
    method: Literal["ppo", "grpo", "rloo", "dpo"] = Field(
        "ppo", description="how the policy learns from the round's feedback (rloo: grpo's trainer with the leave-one-out baseline)"
    )
    recipe: dict[str, Any] = Field(
        default_factory=dict,
        description="the method's own recipe without model / data (e.g. {ppo: {...}, train: {...}, sampling: {...}}); "
                    "its reward: keys other than the reward model's path apply (aggregate:, penalty:)",
    )
    stop_on_overoptimisation: bool = Field(
        False, description="end a round's RL early when its reward-model ensemble's over-optimisation alarm rings "
                           "(needs reward_model.reward.ensemble > 1; the bound is the recipe's overoptimisation_bound)",
    )

    @model_validator(mode="after")
    def _an_alarm_needs_a_reward_model(self) -> "RLSettings":
        if self.stop_on_overoptimisation and self.method == "dpo":
            raise ValueError("stop_on_overoptimisation: dpo trains without a reward model, so no ensemble watches it; "
                             "use ppo, grpo or rloo, or drop the key")
        return self


class LoopConfig(Section):
    model: ModelConfig = Field(description="the starting policy (its LoRA settings apply to round 1)")
    prompts: LoopPrompts = Field(description="training and held-out prompts")
    rounds: int = Field(2, ge=1, description="rounds of generate → feedback → reward model → RL → evaluate")
    output_dir: str = Field("runs/loop", description="loop folder: state.json, feedback.db, rounds/round-N/, report.html")
    seed: int = Field(0, description="seed of every stage")
    candidates: CandidateSettings = Field(default_factory=CandidateSettings, description="generation for feedback")
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings, description="where the judgements come from")
    reward_model: dict[str, Any] = Field(
        default_factory=dict, description="`alignloop rm train` recipe without model / data (train:, reward:, lora:)"
    )
    rl: RLSettings = Field(default_factory=RLSettings, description="the policy update of every round")
    eval: dict[str, Any] = Field(
        default_factory=dict, description="`alignloop eval` settings without policy / prompts / output (sources:, ...)"
    )

    @model_validator(mode="after")
    def _an_alarm_needs_an_ensemble(self) -> "LoopConfig":
        members = (self.reward_model.get("reward") or {}).get("ensemble", 1)
        if self.rl.stop_on_overoptimisation and members == 1:
            raise ValueError("rl.stop_on_overoptimisation: the alarm watches a reward-model ensemble's disagreement; "
                             "set reward_model.reward.ensemble to 2 or more (heads on a frozen backbone, or LoRA adapters)")
        return self

    @model_validator(mode="after")
    def _every_stage_recipe_fits_its_command(self) -> "LoopConfig":
        # The free-form sections are checked here, through the very merge the stages make
        # (`loop/recipes.py`), so a typo is refused before round 1 and not after hours of it.
        errors = stage_recipe_errors(self)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @property
    def db_url(self) -> str:
        return self.feedback.db or f"sqlite:///{Path(self.output_dir).resolve() / 'feedback.db'}"
