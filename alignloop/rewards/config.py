"""The `reward:` section of a recipe, and building the reward source it describes.

One flat section, told apart by `type`, rather than one class per type: the CLI's help and its
unknown-key errors work on plain sections, and a recipe reads the same either way:

    reward:
      type: mix
      sources:
        - {type: reward_model, path: runs/rm/final, weight: 1.0}
        - {type: toxicity, weight: 0.5}
        - {type: function, function: my_rewards:length_penalty, weight: -0.01}

Each type needs some keys (`path` for reward_model, `function` for function, `url` for remote,
`sources` for mix) and accepts only the keys that apply to it: a key set for the wrong type is an
error naming the key, not silently ignored. `weight` is read only inside a mix.

`REWARD_SOURCE_TYPES` is the one table that names the types and how each is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, FiniteFloat, model_validator
from pydantic_core import PydanticCustomError

from alignloop.config import Section
from alignloop.rewards.base import RewardSource
from alignloop.rewards.classifiers import SentimentRewardSource, ToxicityRewardSource
from alignloop.rewards.function import FunctionRewardSource
from alignloop.rewards.learned import LearnedRewardSource
from alignloop.rewards.mix import MixedRewardSource
from alignloop.rewards.remote import RemoteRewardSource

__all__ = ["RewardSourceConfig", "build_reward_source", "REWARD_SOURCE_TYPES"]

RewardSourceType = Literal["reward_model", "toxicity", "sentiment", "function", "remote", "mix"]

# The keys each type needs and the keys it may set (beyond type, name, weight).
_REQUIRED = {"reward_model": {"path"}, "function": {"function"}, "remote": {"url"}, "mix": {"sources"}}
_ALLOWED = {
    "reward_model": {"path", "dtype", "batch_size", "normalize", "max_length", "aggregate", "penalty"},
    "toxicity": {"style"},
    "sentiment": set(),
    "function": {"function"},
    "remote": {"url", "timeout_s", "retries", "backoff_s"},
    "mix": {"sources"},
}


class RewardSourceConfig(Section):
    """Where rewards come from: a learned reward model, a classifier, a function, a server or a mix."""

    type: RewardSourceType = Field(description="reward_model, toxicity, sentiment, function, remote or mix")
    name: str | None = Field(None, description="name in errors and metrics (reward/<name>); default: from the type")
    weight: FiniteFloat = Field(1.0, description="multiplier of this source inside a mix (negative: a penalty)")
    path: str | None = Field(None, description="reward_model: folder saved by `alignloop rm train`")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="reward_model: backbone precision")
    batch_size: int = Field(8, gt=0, description="reward_model: responses scored per forward pass")
    normalize: bool = Field(True, description="reward_model: apply the mean / std stored with the model")
    max_length: int | None = Field(None, gt=0, description="reward_model: keep only the last N tokens of long texts")
    aggregate: Literal["mean", "min", "mean_minus_std"] = Field(
        "mean", description="reward_model, an ensemble: its members' mean, the worst member, or mean - penalty * std")
    penalty: float = Field(1.0, ge=0, description="reward_model: the λ of aggregate mean_minus_std")
    style: Literal["one_minus", "negated"] = Field(
        "one_minus", description="toxicity: reward 1 - p (in [0, 1]) or -p (a penalty, 0 for clean text)"
    )
    function: str | None = Field(None, description="function: 'module:function' called as fn(prompts, responses)")
    url: str | None = Field(None, description="remote: reward server address, e.g. http://127.0.0.1:8000")
    timeout_s: float = Field(30.0, gt=0, description="remote: seconds to wait for each connect / answer")
    retries: int = Field(3, ge=0, description="remote: retries after a failed try (connection, timeout, 5xx)")
    backoff_s: float = Field(0.5, ge=0, description="remote: wait before the first retry; doubles each retry")
    sources: list[RewardSourceConfig] | None = Field(None, min_length=1, description="mix: the weighted parts")

    @model_validator(mode="after")
    def _keys_fit_the_type(self) -> RewardSourceConfig:
        missing = sorted(key for key in _REQUIRED.get(self.type, ()) if getattr(self, key) is None)
        if missing:
            keys = ", ".join(repr(k) for k in missing)
            raise PydanticCustomError("reward_source", "type {type} needs {keys}", {"type": repr(self.type), "keys": keys})
        # A key left at its default is harmless (a saved run's config.yaml lists every key).
        foreign = sorted(
            key for key in self.model_fields_set - {"type", "name", "weight"} - _ALLOWED[self.type]
            if getattr(self, key) != type(self).model_fields[key].default
        )
        if foreign:
            owners = {key: " / ".join(t for t, keys in _ALLOWED.items() if key in keys) for key in foreign}
            keys = ", ".join(f"{key!r} (a key of type {owners[key]})" for key in foreign)
            raise PydanticCustomError(
                "reward_source", "type {type} does not use {keys}", {"type": repr(self.type), "keys": keys}
            )
        return self


def _reward_model(config: RewardSourceConfig) -> RewardSource:
    options = dict(dtype=config.dtype, batch_size=config.batch_size, normalize=config.normalize,
                   aggregate=config.aggregate, penalty=config.penalty)
    return LearnedRewardSource.load(
        config.path, name=config.name or "reward_model", max_length=config.max_length, **options
    )


def _toxicity(config: RewardSourceConfig) -> RewardSource:
    return ToxicityRewardSource(style=config.style, name=config.name or "toxicity")


def _sentiment(config: RewardSourceConfig) -> RewardSource:
    return SentimentRewardSource(name=config.name or "sentiment")


def _function(config: RewardSourceConfig) -> RewardSource:
    return FunctionRewardSource(config.function, name=config.name)


def _remote(config: RewardSourceConfig) -> RewardSource:
    options = dict(timeout_s=config.timeout_s, retries=config.retries, backoff_s=config.backoff_s)
    return RemoteRewardSource(config.url, name=config.name or "remote", **options)


def _mix(config: RewardSourceConfig) -> RewardSource:
    parts = [(part.weight, build_reward_source(part)) for part in config.sources]
    return MixedRewardSource(parts, name=config.name or "mix")


REWARD_SOURCE_TYPES: dict[str, Callable[[RewardSourceConfig], RewardSource]] = {
    "reward_model": _reward_model,
    "toxicity": _toxicity,
    "sentiment": _sentiment,
    "function": _function,
    "remote": _remote,
    "mix": _mix,
}


def build_reward_source(config: RewardSourceConfig) -> RewardSource:
    """The reward source that `config` describes (a reward model is loaded here)."""
    return REWARD_SOURCE_TYPES[config.type](config)
