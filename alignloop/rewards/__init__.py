"""Reward sources behind one interface: `source(prompts, responses) -> list[float]`.

Learned reward models (`LearnedRewardSource`), offline classifiers (`ToxicityRewardSource`,
`SentimentRewardSource`), Python functions (`FunctionRewardSource`), HTTP reward servers
(`RemoteRewardSource`, served by `server.create_reward_app`) and weighted mixes
(`MixedRewardSource`). A recipe's `reward:` section (`RewardSourceConfig`) becomes a source with
`build_reward_source`. `shaping` turns scores into RL rewards (EOS penalty, clipping, running
normalisation).

Importing this package imports neither torch nor the classifiers' models: each loads on first use.
The HTTP server lives in `alignloop.rewards.server` (it needs FastAPI / uvicorn).
"""

from alignloop.rewards.base import PromptInput, RewardSource, RewardSourceError, check_scores
from alignloop.rewards.classifiers import (
    SentimentRewardSource,
    ToxicityRewardSource,
    sentiment_compound,
    toxicity_probability,
)
from alignloop.rewards.config import REWARD_SOURCE_TYPES, RewardSourceConfig, build_reward_source
from alignloop.rewards.function import FunctionRewardSource, load_function
from alignloop.rewards.learned import LearnedRewardSource
from alignloop.rewards.mix import MixedRewardSource
from alignloop.rewards.remote import RemoteRewardSource
from alignloop.rewards.shaping import RunningMoments, clip_rewards, normalize_rewards, penalize_unfinished

__all__ = [
    "PromptInput",
    "RewardSource",
    "RewardSourceError",
    "check_scores",
    "RewardSourceConfig",
    "build_reward_source",
    "REWARD_SOURCE_TYPES",
    "LearnedRewardSource",
    "ToxicityRewardSource",
    "SentimentRewardSource",
    "toxicity_probability",
    "sentiment_compound",
    "FunctionRewardSource",
    "load_function",
    "RemoteRewardSource",
    "MixedRewardSource",
    "RunningMoments",
    "penalize_unfinished",
    "clip_rewards",
    "normalize_rewards",
]
