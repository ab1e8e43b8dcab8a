"""Scripted annotators: simulated evaluators who judge through the same REST API people use.

Demos, tests and simulations need feedback without people. Each scripted annotator is a real
user with an API token; it acknowledges the campaign's guidelines, asks for its next task,
scores the candidates with a gold scorer (any reward source, e.g. toxicity) and submits an
answer, over real HTTP (in turns, or one thread each with `concurrent`). So the loop exercises
the real path (assignment, display order, idempotent submission, quality checks, export), and
the quality checks are tested against evaluators whose bad intent is known.

One answer (`answer_from_scores`) is decided in this order:

1. position bias: with probability `position_bias` the first-shown candidate is preferred
   (pairwise) or the shown order is the ranking, whatever the scores: a habit of the hand, which
   honest and malicious annotators share;
2. an honest annotator answers at random with probability `noise` (a random candidate, chosen by
   id rather than by screen position, so that noise does not depend on the display order);
   otherwise it prefers the higher score and says "tie" when the scores differ by at most
   `tie_margin`;
3. a malicious annotator prefers the LOWER score and never ties: the adversarial answers that
   gold accuracy and disagreement with the other evaluators should catch.

Ratings map the score linearly from `rating_range` onto the campaign's scale (mirrored by a
malicious annotator, uniform under noise). Comment and edit tasks ask for text no scorer can
write, so scripted annotators do not take them.

Determinism: which annotators are malicious is drawn from `seed`, and the draws behind one
answer come from a generator seeded by (seed, annotator's place in the team, task type, prompt,
candidate texts), not by the order tasks arrive in. Who judges which item is the server's choice: by default the
annotators take turns in a fixed order, one task at a time, so a server started with an
`assignment_seed` (the loop's is) makes the same choices of items and display orders, and a
repeated run exports the same judgements. With `concurrent` they ask at once, one thread
each, as people do: then thread timing decides who gets which item (the concurrency tests).

Time: the server measures each answer's duration with its own clock and flags answers faster
than the campaign's `min_seconds` as implausible. Scripted answers take milliseconds, so a
campaign answered by scripted annotators is created with `min_seconds=0` (the loop does);
`think_seconds` makes each annotator really wait before it submits. Timestamps are never faked.

How well the quality checks catch them, and the gold items that help: `annotator_checks.py`.

It lives with the loop, not in the store package: it is a client of the web API (httpx) and of
the reward sources, which the store must not depend on. It imports no torch itself (a
reward-model scorer loads torch only when it is built).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import Field, model_validator
from sqlalchemy.orm import Session

from alignloop.config import Section
from alignloop.feedback import security, service
from alignloop.feedback.models import Role, User
from alignloop.rewards.config import RewardSourceConfig, build_reward_source

__all__ = [
    "ANSWERED_TASK_TYPES", "AnnotatorsConfig", "ScriptedAnnotator", "AnnotationStats", "Scorer",
    "malicious_count", "create_annotators", "task_rng", "answer_from_scores", "answer", "run_annotators",
]

ANSWERED_TASK_TYPES = ("pairwise", "ranking", "rating")
Kind = Literal["honest", "malicious", "judge"]  # a judge answers as an honest one without noise (loop/judges.py)
# A gold scorer: `scorer(prompts, responses) -> list[float]`, higher = better (a RewardSource).
Scorer = Callable[[Sequence[Any], Sequence[str]], Sequence[float]]
_RETRIES = 3  # retries of a request after a dropped connection or a 5xx; every request here is safe to repeat


class AnnotatorsConfig(Section):
    """Scripted annotators: how many, what they prefer, and how they err."""

    count: int = Field(6, ge=1, description="number of scripted annotators")
    preference: RewardSourceConfig = Field(
        default_factory=lambda: RewardSourceConfig(type="toxicity"),
        description="the gold scorer they judge by (a reward source; higher = better)",
    )
    noise: float = Field(0.1, ge=0, le=1, description="probability that an honest annotator answers at random")
    position_bias: float = Field(0.0, ge=0, le=1, description="probability of preferring the first-shown candidate regardless")
    malicious: float = Field(0.0, ge=0, le=1, description="share of annotators (rounded half up) who prefer the WORSE response")
    tie_margin: float = Field(0.0, ge=0, description="an honest annotator says tie when scores differ by at most this")
    rating_range: tuple[float, float] = Field(
        (0.0, 1.0), description="gold scores mapped onto the bottom and top of a rating scale (clipped)"
    )
    seed: int = Field(0, description="seeds who is malicious and every random draw of every answer")
    think_seconds: float = Field(
        0.0, ge=0, description="real wait before each submission (campaigns for scripted annotators use min_seconds=0)"
    )
    concurrent: bool = Field(
        False, description="one thread per annotator, all asking at once as people do (who judges which item then "
        "depends on thread timing); false: they take turns in a fixed order, so a seeded server gives the same "
        "judgements every run"
    )

    @model_validator(mode="after")
    def _range_in_order(self) -> AnnotatorsConfig:
        low, high = self.rating_range
        if not low < high:
            raise ValueError(f"rating_range: expected low < high, got {list(self.rating_range)}")
        return self


@dataclass(frozen=True)
class ScriptedAnnotator:
    """A user of the feedback store plus how it answers."""

    name: str
    user_id: int
    token: str = field(repr=False)  # API token (a secret: kept out of repr and logs)
    kind: Kind
    noise: float
    position_bias: float
    tie_margin: float
    rating_range: tuple[float, float]
    seed: int
    index: int = 0  # position in the team: seeds its answers, so that the account names do not


@dataclass(frozen=True)
class AnnotationStats:
    """What one `run_annotators` call submitted."""

    judgements: int
    per_annotator: dict[str, int]
    per_task_type: dict[str, int]
    seconds: float

    def __str__(self) -> str:
        """One sentence for people: '336 judgements (ranking 336) by 8 annotators (40-45 each) in 8.4 s'."""
        kinds = ", ".join(f"{kind} {count}" for kind, count in self.per_task_type.items())
        counts = sorted(self.per_annotator.values())
        spread = sorted({counts[0], counts[-1]}) if counts else []
        each = f" ({'-'.join(map(str, spread))} each)" if spread else ""
        return (f"{self.judgements} judgements{f' ({kinds})' if kinds else ''} by {len(counts)} annotators{each} "
                f"in {self.seconds:.1f} s")


# ---------------------------------------------------------------- the annotators


def malicious_count(count: int, share: float) -> int:
    """`share` of `count`, rounded half up (6 × 0.25 = 1.5 → 2), so a stated share is not lost
    to Python's round-half-to-even."""
    return math.floor(count * share + 0.5)


def _user(session: Session, name: str) -> User:
    """The evaluator account `name`, created without a password when missing (scripted annotators
    use API tokens only; "!" is no argon2 hash, so every password sign-in fails). Reusing an
    existing one lets a resumed loop carry on with the same annotators."""
    user = service.user_by_name(session, name)
    if user is None:
        user = User(username=name, role=Role.evaluator, password_hash="!", active=True)
        session.add(user)
        session.flush()
    elif user.role != Role.evaluator:
        raise service.Conflict(f"user {name!r} exists as {user.role.value}; scripted annotators need evaluator accounts")
    return user


def create_annotators(session: Session, config: AnnotatorsConfig, prefix: str = "annotator") -> list[ScriptedAnnotator]:
    """`config.count` evaluators named `<prefix>-1..N`, each with a fresh API token; which are
    malicious follows from `config.seed`. The caller commits."""
    chosen = set(random.Random(config.seed).sample(range(config.count), malicious_count(config.count, config.malicious)))
    annotators = []
    for index in range(config.count):
        user = _user(session, f"{prefix}-{index + 1}")
        annotators.append(ScriptedAnnotator(
            name=user.username, user_id=user.id, token=security.issue_api_token(session, user, "scripted annotator"),
            kind="malicious" if index in chosen else "honest", noise=config.noise,
            position_bias=config.position_bias, tie_margin=config.tie_margin,
            rating_range=config.rating_range, seed=config.seed, index=index,
        ))
    return annotators


# ---------------------------------------------------------------- one answer


def task_rng(annotator: ScriptedAnnotator, task: dict[str, Any]) -> random.Random:
    """The generator for one answer, from what is judged and never from when (module docstring);
    from the annotator's place in the team, not its account name, which names the campaign."""
    texts = sorted(candidate["text"] for candidate in task["candidates"])
    key = json.dumps([annotator.seed, annotator.index, task["task_type"], task["prompt"], texts], sort_keys=True)
    return random.Random(hashlib.sha256(key.encode()).hexdigest())


def _pairwise(annotator: ScriptedAnnotator, ids: list[int], scores: list[float], rng: random.Random) -> dict[str, Any]:
    first, second = ids[0], ids[1]
    if rng.random() < annotator.position_bias:
        better: int | None = first
    elif annotator.kind == "malicious":
        better = second if scores[1] < scores[0] else first if scores[0] < scores[1] else rng.choice([first, second])
    elif rng.random() < annotator.noise:
        better = rng.choice(sorted(ids[:2]))
    elif abs(scores[0] - scores[1]) <= annotator.tie_margin:
        better = None
    else:
        better = first if scores[0] > scores[1] else second
    if better is None:
        return {"choice": "tie", "better": None, "strength": None}
    return {"choice": "a" if better == first else "b", "better": better, "strength": None}


def _ranking(annotator: ScriptedAnnotator, ids: list[int], scores: list[float], rng: random.Random) -> dict[str, Any]:
    if rng.random() < annotator.position_bias:
        ranks = {cid: position for position, cid in enumerate(ids, start=1)}
    elif annotator.kind == "malicious":
        order = sorted(zip(scores, rng.sample(range(len(ids)), len(ids)), ids))  # worst first, equal scores shuffled
        ranks = {cid: position for position, (_, _, cid) in enumerate(order, start=1)}
    elif rng.random() < annotator.noise:
        shuffled = rng.sample(sorted(ids), len(ids))
        ranks = {cid: position for position, cid in enumerate(shuffled, start=1)}
    else:  # a candidate's rank: 1 + how many others are better by more than the tie margin
        ranks = {cid: 1 + sum(other > own + annotator.tie_margin for other in scores) for cid, own in zip(ids, scores)}
    return {"ranks": {str(cid): rank for cid, rank in ranks.items()}}


def _rating(annotator: ScriptedAnnotator, task: dict[str, Any], score: float, rng: random.Random) -> dict[str, Any]:
    low, high = task["scale_min"], task["scale_max"]
    if annotator.kind == "honest" and rng.random() < annotator.noise:
        return {"scores": {axis: rng.randint(low, high) for axis in task["rubric_axes"]}}
    bottom, top = annotator.rating_range
    fraction = (min(max(score, bottom), top) - bottom) / (top - bottom)
    value = low + math.floor(fraction * (high - low) + 0.5)
    if annotator.kind == "malicious":
        value = low + high - value
    return {"scores": {axis: value for axis in task["rubric_axes"]}}


def answer_from_scores(
    annotator: ScriptedAnnotator, task: dict[str, Any], scores: Sequence[float], rng: random.Random,
) -> dict[str, Any]:
    """The answer (the `Judgement.answer` JSON) to a task as the API shows it (`app.task_view`:
    prompt, candidates in shown order, task type), given the gold score of each shown candidate."""
    task_type = task["task_type"]
    ids = [candidate["id"] for candidate in task["candidates"]]
    if len(scores) != len(ids):
        raise ValueError(f"assignment {task.get('assignment_id')}: {len(scores)} scores for {len(ids)} candidates")
    if task_type == "pairwise":
        return _pairwise(annotator, ids, list(scores), rng)
    if task_type == "ranking":
        return _ranking(annotator, ids, list(scores), rng)
    if task_type == "rating":
        return _rating(annotator, task, scores[0], rng)
    raise ValueError(f"assignment {task.get('assignment_id')}: scripted annotators answer "
                     f"{', '.join(ANSWERED_TASK_TYPES)} tasks, not {task_type!r}")


def answer(annotator: ScriptedAnnotator, task: dict[str, Any], scorer: Scorer, rng: random.Random) -> dict[str, Any]:
    """Score the shown candidates with the gold scorer, then answer as `answer_from_scores`."""
    texts = [candidate["text"] for candidate in task["candidates"]]
    return answer_from_scores(annotator, task, list(scorer([task["prompt"]] * len(texts), texts)), rng)


# ---------------------------------------------------------------- over HTTP


class _SharedScorer:
    """The gold scorer shared by the annotator threads: one call at a time (a torch reward model
    is not meant to run from several threads at once) and every (prompt, text) scored once (with
    overlap 3, each candidate is shown to at least three annotators)."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.lock = threading.Lock()
        self.cache: dict[tuple[str, str, tuple[str, ...]], float] = {}

    def __call__(self, prompts: Sequence[Any], texts: Sequence[str]) -> list[float]:
        # A comparative scorer (a judge) scores a reply against the others of the call: the key holds them too.
        shown = tuple(texts) if getattr(self.scorer, "comparative", False) else ()
        keys = [(json.dumps(prompt, sort_keys=True), text, shown) for prompt, text in zip(prompts, texts)]
        with self.lock:
            missing = [index for index, key in enumerate(keys) if key not in self.cache]
            if missing:
                fresh = self.scorer([prompts[i] for i in missing], [texts[i] for i in missing])
                self.cache.update((keys[i], float(score)) for i, score in zip(missing, fresh))
            return [self.cache[key] for key in keys]


class _Budget:
    """The quota shared by the threads: a slot is taken before asking for a task and given back
    when none was left, so that together they submit exactly `quota` judgements (or all there are)."""

    def __init__(self, quota: int | None) -> None:
        self.left = quota
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left is None:
                return True
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    def give_back(self) -> None:
        with self.lock:
            if self.left is not None:
                self.left += 1


def _request(client: httpx.Client, who: str, method: str, url: str, **options: Any) -> httpx.Response:
    """One API call, retried after a dropped connection or a 5xx (each call here is idempotent:
    `next` resumes the open assignment, a judgement carries its client key); any other error
    status raises, naming the annotator, the call and the server's reason."""
    for attempt in range(_RETRIES + 1):
        try:
            response = client.request(method, url, **options)
        except httpx.TransportError as error:
            if attempt == _RETRIES:
                raise RuntimeError(f"annotator {who}: {method} {url} failed: {error}") from error
        else:
            if response.status_code < 500 or attempt == _RETRIES:
                break
        time.sleep(0.2 * 2**attempt)
    if response.is_error:
        detail = response.json().get("detail") if "json" in response.headers.get("content-type", "") else response.text
        raise RuntimeError(f"annotator {who}: {method} {url} answered {response.status_code}: {detail}")
    return response


def _task_types(base_url: str, annotator: ScriptedAnnotator, campaign_id: int) -> list[str]:
    """The campaign's task types a scripted annotator can answer, in the campaign's order."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {annotator.token}"}, timeout=30) as client:
        campaigns = _request(client, annotator.name, "GET", "/api/v1/campaigns").json()
    campaign = next((c for c in campaigns if c["id"] == campaign_id), None)
    if campaign is None:
        raise ValueError(f"no campaign {campaign_id} at {base_url}")
    answerable = [task for task in campaign["task_types"] if task in ANSWERED_TASK_TYPES]
    if not answerable:
        raise ValueError(f"campaign {campaign['name']!r} has task types {campaign['task_types']}; "
                         f"scripted annotators answer {', '.join(ANSWERED_TASK_TYPES)}")
    return answerable


def _acknowledge(client: httpx.Client, annotator: ScriptedAnnotator, campaign_id: int) -> None:
    _request(client, annotator.name, "POST", f"/api/v1/campaigns/{campaign_id}/acknowledge")


def _judge_next(
    client: httpx.Client, annotator: ScriptedAnnotator, campaign_id: int, task_type: str, scorer: Scorer,
    think_seconds: float,
) -> bool:
    """Ask for the next task of `task_type` and answer it; False when none is left for them."""
    response = _request(client, annotator.name, "POST", f"/api/v1/campaigns/{campaign_id}/next",
                        params={"task_type": task_type})
    if response.status_code == 204:
        return False
    task = response.json()
    body = {"answer": answer(annotator, task, scorer, task_rng(annotator, task)),
            "client_key": f"scripted-{task['assignment_id']}"}
    time.sleep(think_seconds)
    _request(client, annotator.name, "POST", f"/api/v1/assignments/{task['assignment_id']}/judgement", json=body)
    return True


def _annotate(
    client: httpx.Client, annotator: ScriptedAnnotator, campaign_id: int, task_types: list[str], scorer: Scorer,
    budget: _Budget, think_seconds: float, stop: threading.Event,
) -> Counter:
    """One annotator's session: guidelines, then tasks of each type until none is left or the
    quota is spent. Returns how many judgements it submitted per task type."""
    done: Counter = Counter()
    _acknowledge(client, annotator, campaign_id)
    for task_type in task_types:
        while not stop.is_set() and budget.take():
            if not _judge_next(client, annotator, campaign_id, task_type, scorer, think_seconds):
                budget.give_back()
                break
            done[task_type] += 1
    return done


def _annotate_in_turns(
    clients: Sequence[httpx.Client], annotators: Sequence[ScriptedAnnotator], campaign_id: int,
    task_types: list[str], scorer: Scorer, budget: _Budget, think_seconds: float,
) -> dict[str, Counter]:
    """Every annotator in turn asks for one task and answers it, in the listed order, until none
    is left for any of them or the quota is spent: the same sequence of requests every run."""
    done: dict[str, Counter] = {annotator.name: Counter() for annotator in annotators}
    for client, annotator in zip(clients, annotators):
        _acknowledge(client, annotator, campaign_id)
    for task_type in task_types:
        active = list(zip(clients, annotators))
        while active:
            for client, annotator in list(active):
                if not budget.take():
                    return done
                if _judge_next(client, annotator, campaign_id, task_type, scorer, think_seconds):
                    done[annotator.name][task_type] += 1
                else:
                    budget.give_back()
                    active.remove((client, annotator))
    return done


def run_annotators(
    base_url: str, annotators: Sequence[ScriptedAnnotator], campaign_id: int, config: AnnotatorsConfig,
    quota: int | None = None, *, scorer: Scorer | None = None, timeout_s: float = 60.0,
) -> AnnotationStats:
    """Every annotator judges the campaign over HTTP until nothing is left for them or `quota`
    judgements (counted over this call, all annotators together) are in: in turns, in the
    listed order (reproducible with a seeded server), or with `config.concurrent` one thread each.

    `scorer` defaults to the reward source `config.preference` describes; pass one already
    built (a loaded reward model) to reuse it. The first annotator error stops them all and is
    raised here.
    """
    if quota is not None and quota < 0:
        raise ValueError(f"quota: expected 0 or more judgements, got {quota}")
    if not annotators:
        return AnnotationStats(0, {}, {}, 0.0)
    started = time.perf_counter()
    task_types = _task_types(base_url, annotators[0], campaign_id)
    shared = _SharedScorer(scorer or build_reward_source(config.preference))
    budget = _Budget(quota)
    if config.concurrent:
        done = _annotate_in_threads(base_url, annotators, campaign_id, task_types, shared, budget, config, timeout_s)
    else:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(httpx.Client(base_url=base_url, timeout=timeout_s,
                                                        headers={"Authorization": f"Bearer {a.token}"}))
                       for a in annotators]
            done = _annotate_in_turns(clients, annotators, campaign_id, task_types, shared, budget, config.think_seconds)
    per_task = sum(done.values(), Counter())
    return AnnotationStats(sum(per_task.values()), {a.name: sum(done[a.name].values()) for a in annotators},
                           dict(per_task), time.perf_counter() - started)


def _annotate_in_threads(
    base_url: str, annotators: Sequence[ScriptedAnnotator], campaign_id: int, task_types: list[str], scorer: Scorer,
    budget: _Budget, config: AnnotatorsConfig, timeout_s: float,
) -> dict[str, Counter]:
    stop = threading.Event()
    done: dict[str, Counter] = {}  # annotator -> judgements per task type; each thread writes its own key
    errors: list[BaseException] = []

    def work(annotator: ScriptedAnnotator) -> None:
        headers = {"Authorization": f"Bearer {annotator.token}"}
        try:
            with httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s) as client:
                done[annotator.name] = _annotate(
                    client, annotator, campaign_id, task_types, scorer, budget, config.think_seconds, stop)
        except BaseException as error:  # re-raised below: an exception in a thread would vanish otherwise
            errors.append(error)
            stop.set()

    threads = [threading.Thread(target=work, args=(a,), name=f"annotator {a.name}") for a in annotators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return done
