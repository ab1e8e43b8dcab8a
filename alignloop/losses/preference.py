"""Direct preference optimisation: the DPO family, SimPO and KTO.

DPO (Rafailov et al. 2023) trains the policy on preference pairs without a reward model. The
policy that maximises reward under a KL penalty towards a reference defines an implicit reward
beta * log(pi(y|x) / pi_ref(y|x)); put into the Bradley-Terry likelihood, it leaves a loss over
the log-ratio difference of the chosen (c) and rejected (r) responses

    h = [log pi(y_c|x) - log pi_ref(y_c|x)] - [log pi(y_r|x) - log pi_ref(y_r|x)]

which the variants penalise differently: logistically (sigmoid, with the label-noise
corrections cDPO and rDPO), quadratically towards a fixed margin (IPO), or with a hinge (SLiC).
A DPO config names one of them by its key in `DPO_LOSSES`, which also holds SimPO: a pairwise
variant that needs no reference and takes length-normalised log-probs instead. The DPO method
offers every variant the same inputs by name and each takes what its signature names
(`losses/variants.py`), so a variant's name lives only in the table.

KTO is not in the table: it takes unpaired examples labelled desirable or undesirable, plus a
reference point estimated from the batch; it is its own method (`algorithms/kto.py`).

Inputs are sequence log-probs, one per example: summed over the response tokens (the method
computes them with `models.forward.response_logps`), or their mean for SimPO. An item is an
example (a pair; for KTO one labelled response): every loss returns `(loss_sum, metrics)`, sums
over the examples (the convention of the whole package, see `alignloop/losses/__init__.py`). Each
is written per example, as below, and summed by `reduce.sums_over_examples`; `loss.per_example`
(e.g. `dpo_sigmoid.per_example`) gives the losses (B,) and metrics (B,) of each example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignloop.losses.reduce import Metrics, sums_over_examples


def _require_vectors(loss_name: str, **tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(shape != first for shape in shapes.values()):
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"{loss_name}: expected (B,) tensors of one shape, got {listed}")


def _require_positive(loss_name: str, **numbers: float) -> None:
    for name, value in numbers.items():
        if not value > 0:
            raise ValueError(f"{loss_name}: {name} must be > 0, got {value}")


def _require_label_smoothing(loss_name: str, label_smoothing: float) -> None:
    # At 0.5 the label carries no information (rDPO divides by 1 - 2 eps); above it, it is flipped.
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"{loss_name}: label_smoothing must be in [0, 0.5), got {label_smoothing}")


def _refuse_label_smoothing(loss_name: str, label_smoothing: float) -> None:
    # Silently ignoring a setting would train something other than what the recipe says.
    if label_smoothing != 0.0:
        raise ValueError(f"{loss_name} takes no label smoothing; got {label_smoothing}")


def _reward_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
) -> Metrics:
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()  # (B,)
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype),
        "logps/chosen": chosen_logps.detach(),
        "logps/rejected": rejected_logps.detach(),
    }


def _logratio_difference(
    loss_name: str,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, Metrics]:
    """h (B,) of the paired variants, and their metrics (implicit rewards beta * log-ratio)."""
    _require_vectors(
        loss_name,
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        reference_chosen_logps=reference_chosen_logps,
        reference_rejected_logps=reference_rejected_logps,
    )
    _require_positive(loss_name, beta=beta)
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    metrics = _reward_metrics(
        beta * chosen_logratios, beta * rejected_logratios, policy_chosen_logps, policy_rejected_logps
    )
    return chosen_logratios - rejected_logratios, metrics


@sums_over_examples
def dpo_sigmoid(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """DPO, Rafailov et al. 2023, eq. 7: -log sigma(beta * h).

    With `label_smoothing` eps > 0, conservative DPO (cDPO, Mitchell 2023, "A note on DPO with
    noisy preferences"): each label is taken to be flipped with probability eps, so the target
    is a soft one, -(1 - eps) log sigma(beta h) - eps log sigma(-beta h). Its minimum is at a
    finite margin, which keeps the policy from pushing h to infinity on noisy pairs.
    """
    _require_label_smoothing("dpo_sigmoid", label_smoothing)
    h, metrics = _logratio_difference(
        "dpo_sigmoid", policy_chosen_logps, policy_rejected_logps,
        reference_chosen_logps, reference_rejected_logps, beta,
    )  # (B,)
    eps = label_smoothing
    losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)  # (B,)
    return losses, metrics


@sums_over_examples
def dpo_robust(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """Robust DPO (rDPO), Chowdhury et al. 2024, "Provably Robust DPO", eq. 8.

        [(1 - eps) * (-log sigma(beta h)) - eps * (-log sigma(-beta h))] / (1 - 2 eps)

    eps (`label_smoothing`) is the known rate at which labels are flipped. Unlike cDPO, this is
    an unbiased estimate of the loss on clean labels, so the loss of one pair can be negative.
    At eps = 0 it is DPO.
    """
    _require_label_smoothing("dpo_robust", label_smoothing)
    h, metrics = _logratio_difference(
        "dpo_robust", policy_chosen_logps, policy_rejected_logps,
        reference_chosen_logps, reference_rejected_logps, beta,
    )  # (B,)
    eps = label_smoothing
    as_labelled = -F.logsigmoid(beta * h)  # (B,)
    as_flipped = -F.logsigmoid(-beta * h)  # (B,)
    losses = ((1 - eps) * as_labelled - eps * as_flipped) / (1 - 2 * eps)  # (B,)
    return losses, metrics


@sums_over_examples
def dpo_ipo(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """IPO, Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", eq. 17: (h - 1 / (2 beta))^2, with beta as the paper's regulariser tau.

    A squared loss towards a finite target margin: unlike DPO it does not reward pushing h ever
    higher on pairs the policy already ranks right. h uses *summed* log-probs, as in the paper;
    some TRL versions divide each log-prob by the response length first, which changes the scale
    of h and hence the meaning of beta. Takes no label smoothing (`label_smoothing` must be 0).
    """
    _refuse_label_smoothing("dpo_ipo", label_smoothing)
    h, metrics = _logratio_difference(
        "dpo_ipo", policy_chosen_logps, policy_rejected_logps,
        reference_chosen_logps, reference_rejected_logps, beta,
    )  # (B,)
    losses = (h - 1 / (2 * beta)) ** 2  # (B,)
    return losses, metrics


@sums_over_examples
def dpo_hinge(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """Hinge loss of SLiC-HF, Zhao et al. 2023, eq. 1 (its rank-calibration term, without the
    cross-entropy regulariser): max(0, 1 - beta h).

    SLiC compares raw log-likelihoods with a margin delta; here, as in the "hinge-norm" loss of
    Liu et al. 2024 (RSO) and in TRL, the log-likelihoods are taken relative to the reference
    and 1 / beta plays the role of delta. Pairs beyond the margin get no gradient at all. Takes no
    label smoothing (`label_smoothing` must be 0).
    """
    _refuse_label_smoothing("dpo_hinge", label_smoothing)
    h, metrics = _logratio_difference(
        "dpo_hinge", policy_chosen_logps, policy_rejected_logps,
        reference_chosen_logps, reference_rejected_logps, beta,
    )  # (B,)
    losses = torch.relu(1 - beta * h)  # (B,)
    return losses, metrics


@sums_over_examples
def simpo(
    chosen_avg_logps: torch.Tensor,
    rejected_avg_logps: torch.Tensor,
    *,
    beta: float,
    gamma: float,
) -> tuple[torch.Tensor, Metrics]:
    """SimPO, Meng et al. 2024, eq. 6: -log sigma(beta avg_c - beta avg_r - gamma).

    Reference-free: the implicit reward is the policy's *average* per-token log-prob, scaled by
    beta (summed log-probs divided by the response length), the quantity beam search ranks by; the
    length normalisation counters DPO's drift towards longer responses. gamma > 0 is a target margin between the two
    rewards. It is gamma itself, as in eq. 6; the authors' scripts configure gamma / beta.
    Metrics `rewards/*` are beta * average log-prob; `logps/*` are the average log-probs.
    """
    _require_vectors("simpo", chosen_avg_logps=chosen_avg_logps, rejected_avg_logps=rejected_avg_logps)
    _require_positive("simpo", beta=beta)
    if gamma < 0:
        raise ValueError(f"simpo: gamma (the target margin) must be >= 0, got {gamma}")
    chosen_rewards = beta * chosen_avg_logps  # (B,)
    rejected_rewards = beta * rejected_avg_logps  # (B,)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)  # (B,)
    return losses, _reward_metrics(chosen_rewards, rejected_rewards, chosen_avg_logps, rejected_avg_logps)


def kto_reference_point(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0 = max(0, mean(log pi(y'|x) - log pi_ref(y'|x))), a () tensor.

    It estimates KL(pi || pi_ref) (Ethayarajh et al. 2024, sec. 4.1) on *mismatched* pairs: each
    prompt x with the response y' of another example, so it says nothing about whether a
    response is good. It is detached because the paper does not backpropagate through z0, and
    clamped at 0 because a KL divergence is never negative while its sample estimate can be.
    With several processes, average the per-process estimates before use.
    """
    _require_vectors(
        "kto_reference_point", policy_kl_logps=policy_kl_logps, reference_kl_logps=reference_kl_logps
    )
    if policy_kl_logps.numel() == 0:
        raise ValueError("kto_reference_point: needs at least one mismatched pair, got none")
    return (policy_kl_logps - reference_kl_logps).mean().clamp(min=0).detach()  # ()


@sums_over_examples
def kto(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl_estimate: torch.Tensor | float,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, Metrics]:
    """KTO, Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", eq. 8.

    With r = log pi(y|x) - log pi_ref(y|x) and the reference point z0 = `kl_estimate` (see
    `kto_reference_point`), the loss of one example is lambda_y - v(x, y):

        desirable:    lambda_D * (1 - sigma(beta (r - z0)))
        undesirable:  lambda_U * (1 - sigma(beta (z0 - r)))

    Examples are unpaired: each is only judged good or bad. The saturating sigma stands in for the
    prospect-theory value function; z0 makes a response count as a gain only when it beats the
    policy's typical drift from the reference. The paper suggests weights such that
    lambda_D n_D / (lambda_U n_U) lies in [1, 4/3] for n_D desirable and n_U undesirable examples.
    Metrics: `rewards/implicit` = beta r, `rewards/margins` = beta (r - z0) signed towards the
    label (positive when the example is on its label's side of z0), `rewards/accuracies` = that
    margin > 0, `logps/policy`, `kl/reference_point` (z0 for each example, so that the sum divided
    by the example count is z0).
    """
    _require_vectors("kto", policy_logps=policy_logps, reference_logps=reference_logps, desirable=desirable)
    _require_positive(
        "kto", beta=beta, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight
    )
    z0 = torch.as_tensor(kl_estimate, dtype=policy_logps.dtype, device=policy_logps.device)
    if z0.dim() != 0:
        raise ValueError(
            f"kto: kl_estimate must be a scalar (the reference point z0), got shape {tuple(z0.shape)}"
        )
    z0 = z0.detach().clamp(min=0)  # no gradient through z0, whatever the caller passed
    desirable = desirable.bool()  # (B,)
    logratios = policy_logps - reference_logps  # (B,)
    margins = beta * torch.where(desirable, logratios - z0, z0 - logratios)  # (B,)
    weights = torch.where(
        desirable,
        torch.full_like(logratios, desirable_weight),
        torch.full_like(logratios, undesirable_weight),
    )  # (B,)
    losses = weights * (1 - torch.sigmoid(margins))  # (B,)
    margins = margins.detach()
    metrics = {
        "rewards/implicit": (beta * logratios).detach(),
        "rewards/margins": margins,
        "rewards/accuracies": (margins > 0).to(margins.dtype),
        "logps/policy": policy_logps.detach(),
        "kl/reference_point": z0.expand_as(margins),
    }
    return losses, metrics


# The pairwise variants a DPO config names. The reference-based ones share one signature; SimPO
# takes average log-probs and no reference. KTO (`kto`, `kto_reference_point`) is its own method.
DPO_LOSSES = {
    "sigmoid": dpo_sigmoid,
    "robust": dpo_robust,
    "ipo": dpo_ipo,
    "hinge": dpo_hinge,
    "simpo": simpo,
}
