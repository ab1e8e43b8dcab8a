"""A reward model: a causal-LM backbone that reads a whole (prompt, response) and says one number.

Design choices, each for a reason:

- **Backbone = a causal LM, not a sequence-classification class.** The reward model starts
  from the same network as the policy (often the SFT model itself), loaded, LoRA-wrapped and
  saved by the same code (`load_model_and_tokenizer`, `save_trained_model`). Any causal LM
  that transformers can load therefore works, and a LoRA reward model is just the usual peft
  model plus a head.
- **The score is read at the last real token** (`pooling: last`, as TRL and OpenRLHF do). Under
  causal attention only the last token has seen the whole prompt and response (and the
  end-of-turn token the chat template writes, which marks "the response is finished"). Its
  index comes from the attention mask, so left and right padding both work.
- **Or from the mean over the response's tokens** (`pooling: mean`). A quality that lives in
  some of the reply's words (toxicity, profanity) is then in the features already; the last
  token has to learn to gather it through attention, which a few hundred judgements do not
  teach. Measured on the detox demo's feedback (~88 rankings of 4 replies), as within-prompt
  pairwise agreement with alt-profanity-check on 160 fresh replies to the held-out prompts,
  with a linear head on the frozen built-in model: mean 0.77 / 0.68 against last token
  0.70 / 0.52 (seeds 1 / 2), and the LoRA-trained last-token reward models 0.64 / 0.48.
- **Or from several layers** (`feature_layers`, e.g. `[0, 8]`: the token embeddings and block
  8's output). Each layer's token states are RMS-normalised (their scales differ ~100×: the
  embeddings' RMS is ~0.04, block 8's ~3) before pooling, and the pooled vectors are
  concatenated. Which words a reply holds is plainest in the lowest layers, while the last
  layer is shaped for predicting the next token. On the three demo seeds' feedback, a linear
  head on the mean-pooled embeddings + block 8 ordered 320 fresh held-out replies as
  alt-profanity-check does in 0.70 / 0.68 / 0.66 of same-prompt pairs (toxicity 0.05 apart),
  against 0.63 / 0.59 / 0.62 on the last layer (benchmarks/reward_agreement.py).
- **Positions come from the attention mask.** A left-padded row would otherwise start its real
  tokens at position `pad_count` instead of 0, and its score would change with the padding of
  its batch neighbours: completely with absolute position embeddings (GPT-2, OPT), slightly
  with RoPE (relative in exact arithmetic, not in floating point). `cumsum(mask) - 1` gives
  every row the positions it would have alone.
- **The head runs in float32, outside autocast.** It is a single dot product whose output is
  compared across examples (Bradley-Terry margins, normalisation); bf16 keeps 8 significant
  bits, so a score near 3 would be rounded to steps of 1/64 and small margins would drown in
  rounding. The cost is one (B, H) matmul.
- **Normalisation lives in buffers, outside `forward`.** Training losses want raw scores (a
  pairwise loss ignores a shift anyway); the RL step wants rewards of mean 0 and std 1 on
  the policy's own responses, so that the KL coefficient and value-loss scale mean the same
  thing from one reward model to the next (Ziegler et al. 2019, sec. 2.2, normalise to mean 0
  and variance 1 on samples of the initial policy). The statistics travel with the saved model.
- **Optionally an ensemble of heads** (`members` K > 1, `reward.ensemble`): K linear heads on
  one backbone's features, trained on different bootstraps of the judgements (see
  `reward_ensemble.py`). On a frozen backbone K members cost K dot products, not K models. The
  members' spread on a reply measures how much the judgements pin its score down, which the RL
  step penalises (`aggregate: mean_minus_std`) and watches (the over-optimisation alarm).
  `forward` gives the members' mean raw score; `forward(..., members=True)` gives each.
  On a LoRA backbone that trains, each member also has its own adapter on the one shared base
  (`member_adapters`, see `adapter_members.py`): the members' features then differ, (B, K, H),
  and member k's head reads member k's.
- **Optional ordinal cut points** (`num_rating_classes`) for ratings on a scale: the
  cumulative-link loss in `losses/reward.py` needs C-1 increasing thresholds that train
  together with the model, so they live here and are saved with the head.

`model.train()` / `model.eval()` switch the backbone's dropout (and LoRA's) as for any module;
the backbone is used exactly as loaded. Scoring (`reward_scoring.py`) always runs in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from alignloop.data.encode import IGNORE_INDEX
from alignloop.errors import UserError
from alignloop.models.adapter_members import active_member, add_member_adapters
from alignloop.models.loading import ModelConfig, load_model_and_tokenizer
from alignloop.models.lora import is_lora_model
from alignloop.models.padding_free import last_hidden_states, positions_from_mask

__all__ = [
    "RewardModel",
    "build_reward_model",
    "init_reward_head",
    "initial_rating_thresholds",
    "last_token_indices",
    "response_mask_of",
    "score_at_last_token",
    "hidden_at_last_token",
    "mean_over_response",
    "positions_from_mask",
    "POOLINGS",
]

POOLINGS = ("last", "mean")


def init_reward_head(head: nn.Linear) -> nn.Linear:
    """Weights ~ N(0, std = 1 / sqrt(d_model + 1)), bias 0; returns `head`.

    Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences" (sec. 2.2; the
    value is in the openai/lm-human-preferences code released with the paper, also used for
    Stiennon et al. 2020 and documented in Huang et al. 2023, "The N Implementation Details of
    RLHF with PPO"). The hidden features come out of the final norm at roughly unit scale, so
    the initial scores have a standard deviation of about 1 (variance d / (d + 1)): the
    pairwise loss starts in the sigmoid's sensitive range, on the same scale as the
    unit-variance normalisation applied later.
    """
    d_model = head.in_features
    with torch.no_grad():
        head.weight.normal_(mean=0.0, std=1.0 / math.sqrt(d_model + 1))
        head.bias.zero_()
    return head


def initial_rating_thresholds(num_classes: int) -> torch.Tensor:
    """(C-1,) cut points logit(c / C), c = 1..C-1: strictly increasing, and at a score of 0
    (near where a fresh head starts) every rating class is equally likely under the
    cumulative-link model, so the first steps are not spent undoing an arbitrary prior."""
    if num_classes < 2:
        raise ValueError(f"num_rating_classes must be at least 2, got {num_classes}")
    fractions = torch.arange(1, num_classes, dtype=torch.float32) / num_classes  # (C-1,)
    return torch.logit(fractions)


MIN_THRESHOLD_GAP = 1e-3  # keeps neighbouring cut points apart where softplus underflows


def threshold_parameters(thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Increasing cut points -> (first (1,), gaps (C-2,) in softplus-inverse space)."""
    gaps = thresholds[1:] - thresholds[:-1] - MIN_THRESHOLD_GAP
    return thresholds[:1].clone(), gaps + torch.log(-torch.expm1(-gaps))  # softplus⁻¹(g) = g + log(1 - e^-g)


def last_token_indices(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) index of each row's last real token (0 for an all-padding row).

    Position t weighted by its mask value is largest at the last real token, for left and
    right padding alike.
    """
    T = attention_mask.shape[-1]
    steps = torch.arange(T, device=attention_mask.device)  # (T,)
    return (steps * attention_mask.long()).argmax(-1)


def response_mask_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T) bool: the response tokens of a collated batch (the positions its labels keep)."""
    return batch["labels"] != IGNORE_INDEX


def score_at_last_token(
    hidden: torch.Tensor, attention_mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """(B, T, H) hidden states -> (B,) float32 scores of a linear head read at each row's last
    real token, outside autocast (see the module docstring)."""
    return _linear_head(hidden_at_last_token(hidden, attention_mask), weight, bias).squeeze(-1)


def hidden_at_last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(..., B, T, H) hidden states -> (..., B, H) each row's at its last real token."""
    rows = torch.arange(hidden.shape[-3], device=hidden.device)  # (B,)
    return hidden[..., rows, last_token_indices(attention_mask).to(hidden.device), :]


def mean_over_response(hidden: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(..., B, T, H) hidden states, (B, T) bool response tokens -> (..., B, H) their mean per
    row (an all-prompt row, whose response was cut away, gets zeros)."""
    weights = response_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(-2) / weights.sum(-2).clamp(min=1)


def _linear_head(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(B, H) features, (K, H) weight -> (B, K) scores in float32 (float64 for a float64 model),
    outside autocast (see the module docstring); (B, K, H) features, each member's own, the same."""
    dtype = torch.promote_types(features.dtype, torch.float32)
    with torch.autocast(device_type=features.device.type, enabled=False):
        features, weight = features.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        if features.dim() == 2:
            return F.linear(features, weight, bias)
        scores = torch.einsum("bkh,kh->bk", features, weight)
        return scores if bias is None else scores + bias


class RewardModel(nn.Module):
    """backbone (a causal LM, plain or peft LoRA) + a float32 linear head -> one score per row.

    `forward` returns raw scores; `normalized(scores)` applies the stored mean / std.
    `base_model_name` records what the backbone was built from (a built-in name, folder or hub
    id), for the saved model's metadata. `members` K > 1 makes an ensemble of K heads, each
    with its own normalisation: `forward` then gives the members' mean raw score, and
    `forward(..., members=True)` the (B, K) scores that `normalized` takes. `member_adapters`
    (K names of the LoRA backbone's adapters, member 0 first) gives each member its own adapter.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_rating_classes: int | None = None,
        base_model_name: str | None = None,
        pooling: str = "last",
        members: int = 1,
        feature_layers: Sequence[int] | None = None,
        member_adapters: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if members < 1:
            raise ValueError(f"an ensemble needs at least 1 member, got {members}")
        if member_adapters and (len(member_adapters) != members or not is_lora_model(backbone)):
            raise ValueError(f"{members} members as adapters need a LoRA backbone with {members} adapters, "
                             f"got {list(member_adapters)}")
        self.backbone = backbone
        self.member_adapters = tuple(member_adapters) if member_adapters else None
        self.base_model_name = base_model_name
        self.pooling = pooling
        text_config = backbone.config.get_text_config()
        self.feature_layers = checked_feature_layers(feature_layers, text_config.num_hidden_layers)
        width = text_config.hidden_size * (len(self.feature_layers) if self.feature_layers else 1)
        device = next(backbone.parameters()).device
        # The head stays float32 whatever the backbone's dtype: see the module docstring.
        self.head = init_reward_head(nn.Linear(width, members, device=device, dtype=torch.float32))
        self.num_rating_classes = num_rating_classes
        # Cut points are stored as the first one plus softplus-positive gaps, so that no
        # optimiser step can put them out of order (the ordinal likelihood needs them increasing).
        self.rating_threshold_first: nn.Parameter | None = None
        self.rating_threshold_gaps: nn.Parameter | None = None
        if num_rating_classes is not None:
            first, gaps = threshold_parameters(initial_rating_thresholds(num_rating_classes).to(device))
            self.rating_threshold_first, self.rating_threshold_gaps = nn.Parameter(first), nn.Parameter(gaps)
        self.register_buffer("score_mean", torch.zeros(members, device=device))  # one per member
        self.register_buffer("score_std", torch.ones(members, device=device))

    @property
    def rating_thresholds(self) -> torch.Tensor | None:
        """(C-1,) strictly increasing cut points of the ordinal rating model, or None."""
        if self.rating_threshold_first is None:
            return None
        steps = F.softplus(self.rating_threshold_gaps) + MIN_THRESHOLD_GAP  # (C-2,) > 0 even in float32
        return torch.cat([self.rating_threshold_first, self.rating_threshold_first + steps.cumsum(0)])

    @property
    def hidden_size(self) -> int:
        return self.head.in_features

    @property
    def members(self) -> int:
        """How many heads score each row (1: a single reward model)."""
        return self.head.out_features

    def forward(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
        prefix_groups: torch.Tensor | None = None, response_mask: torch.Tensor | None = None,
        *, features: torch.Tensor | None = None, members: bool = False, member: int | None = None,
    ) -> torch.Tensor:
        """(B, T) ids and mask -> (B,) float32 raw scores, read at each row's last real token
        (`pooling` "last") or averaged over its response tokens, `response_mask` (B, T) bool
        (`pooling` "mean", which needs it). An ensemble gives its members' mean, or with
        `members=True` each member's, (B, K).

        Rows with the same `prefix_groups` (B,) value (responses to one prompt) may compute
        their common prefix once; the scores are the same. `features` (B, H), computed before
        (`FrozenFeatures`, for a frozen backbone), are scored instead; they pass through
        `forward` so that a DDP-wrapped model still syncs the head's gradients. `member` k: that
        member's scores alone, (B, 1), computed with its adapter only (training one member at a time).
        """
        if member is not None:
            head = self.head.weight[member : member + 1], self.head.bias[member : member + 1]
            if features is None:
                features = self.features(input_ids, attention_mask, prefix_groups, response_mask, member=member)
            return _linear_head(features, *head)
        if features is None:
            features = self.features(input_ids, attention_mask, prefix_groups, response_mask)
        return self.member_scores(features) if members else self.score_features(features)

    def features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_groups: torch.Tensor | None = None,
        response_mask: torch.Tensor | None = None, member: int | None = None,
    ) -> torch.Tensor:
        """(B, H) what the head reads: the last real token's hidden state or the response's mean
        ((B, len(feature_layers) * H), those of each feature layer side by side; arguments as
        for `forward`). Members with their own adapters: (B, K, H), member k's features at k, or
        with `member` k, (B, H) that member's alone."""
        if self.pooling == "mean" and response_mask is None:
            raise ValueError("a reward model with pooling 'mean' needs the response_mask of its rows")
        rows = (input_ids, attention_mask, prefix_groups, response_mask)
        if not self.member_adapters:
            return self._pooled(*rows)
        if member is not None:
            return self._pooled(*rows, adapter=self.member_adapters[member])
        return torch.stack([self._pooled(*rows, adapter=name) for name in self.member_adapters], dim=-2)

    def _pooled(self, input_ids, attention_mask, prefix_groups, response_mask,
                adapter: str | None = None) -> torch.Tensor:
        """(B, H) features of the backbone (`features`' arguments), computed with LoRA adapter
        `adapter` active if one is named."""
        if adapter is not None:
            with active_member(self.backbone, adapter):
                return self._pooled(input_ids, attention_mask, prefix_groups, response_mask)
        # (B, T, H) after the final norm, or (L, B, T, H) of the feature layers; the LM logits
        # are not used, so not projected.
        hidden = last_hidden_states(self.backbone, input_ids, attention_mask, positions_from_mask(attention_mask),
                                    prefix_groups=prefix_groups, layers=self.feature_layers)
        if self.feature_layers:
            hidden = rms_normalized(hidden)
        if self.pooling == "last":
            pooled = hidden_at_last_token(hidden, attention_mask)
        else:
            mask = response_mask.to(hidden.device) & attention_mask.to(hidden.device).bool()  # (B, T)
            pooled = mean_over_response(hidden, mask)
        return torch.cat(pooled.unbind(0), dim=-1) if self.feature_layers else pooled

    def member_scores(self, features: torch.Tensor) -> torch.Tensor:
        """(B, H) features, or (B, K, H) each member's own, -> (B, K) float32 raw scores of each
        member, outside autocast (see the module docstring)."""
        return _linear_head(features, self.head.weight, self.head.bias)

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """(B, H) features -> (B,) float32 raw scores (an ensemble's: its members' mean)."""
        return self.member_scores(features).mean(-1)

    def normalized(self, scores: torch.Tensor) -> torch.Tensor:
        """(scores - mean) / std with the stored statistics (identity until they are set): (B,)
        scores of a single reward model, or (B, K) member scores, each member by its own."""
        if scores.dim() == 1 and self.members > 1:
            raise ValueError(f"an ensemble of {self.members} normalises each member: pass (B, {self.members}) "
                             "member scores (forward(..., members=True))")
        return (scores - self.score_mean) / self.score_std

    def set_normalization(self, mean: float | list[float], std: float | list[float]) -> None:
        """Store the raw-score mean and std that `normalized` removes (e.g. measured on
        policy samples after training): numbers, or one per member."""
        means = torch.as_tensor(mean, dtype=torch.float64).flatten()
        stds = torch.as_tensor(std, dtype=torch.float64).flatten()
        if means.numel() not in (1, self.members) or stds.numel() not in (1, self.members):
            raise ValueError(f"normalisation needs one mean and std, or one per member ({self.members}), "
                             f"got {means.numel()} and {stds.numel()}")
        if not (bool(torch.isfinite(means).all()) and bool(torch.isfinite(stds).all()) and bool((stds > 0).all())):
            raise ValueError(f"normalisation needs a finite mean and a finite std > 0, got mean={mean}, std={std}")
        self.score_mean.copy_(means.to(self.score_mean).expand(self.members))
        self.score_std.copy_(stds.to(self.score_std).expand(self.members))

    @property
    def normalization(self) -> tuple[float, float]:
        """(mean, std) currently stored, of a single reward model (`member_normalization` for
        an ensemble's)."""
        if self.members > 1:
            raise ValueError(f"an ensemble of {self.members} has one normalisation per member: member_normalization")
        return float(self.score_mean[0]), float(self.score_std[0])

    @property
    def member_normalization(self) -> tuple[list[float], list[float]]:
        """([mean per member], [std per member])."""
        return self.score_mean.tolist(), self.score_std.tolist()


def checked_feature_layers(layers: Sequence[int] | None, num_layers: int) -> tuple[int, ...] | None:
    """`layers` as a tuple (None or empty: the last hidden state alone), each one checked against
    a backbone of `num_layers` blocks (0: the token embeddings ... num_layers: after the final norm)."""
    if not layers:
        return None
    wrong = [layer for layer in layers if not 0 <= layer <= num_layers]
    if wrong or len(set(layers)) != len(layers):
        raise UserError(f"reward.feature_layers: {list(layers)} must name distinct layers from 0 (the token "
                        f"embeddings) to {num_layers} (after the final norm) of this {num_layers}-block backbone")
    return tuple(int(layer) for layer in layers)


def rms_normalized(hidden: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each token's state over its root mean square, in float32 at least: (..., H) -> (..., H)."""
    hidden = hidden.to(torch.promote_types(hidden.dtype, torch.float32))
    return hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)


def build_reward_model(
    model: ModelConfig | str,
    *,
    num_rating_classes: int | None = None,
    pooling: str = "last",
    members: int = 1,
    feature_layers: Sequence[int] | None = None,
    member_adapters: bool = False,
    log: Callable[[str], None] | None = None,
    **fields: Any,
) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """A fresh reward model on the backbone `model` describes, and its tokenizer.

    `member_adapters`: each of the `members` gets its own LoRA adapter on the one base (the
    backbone must be LoRA); otherwise the members are heads on shared features.
    `fields` override ModelConfig fields as in `load_model_and_tokenizer` (dtype, lora, ...).
    With `lora` set only the adapters, the head (and the rating thresholds) train; otherwise
    everything does. The model comes back in whatever mode the loader left it (transformers
    returns eval mode); call `.train()` before training.
    """
    backbone, tokenizer = load_model_and_tokenizer(model, log=log, **fields)
    name = model if isinstance(model, str) else model.name
    adapters = add_member_adapters(backbone, members) if members > 1 and member_adapters else None
    model = RewardModel(backbone, num_rating_classes=num_rating_classes, base_model_name=name, pooling=pooling,
                        members=members, feature_layers=feature_layers, member_adapters=adapters)
    return model, tokenizer
