"""Export a campaign's judgements as a dataset the trainers read as it is.

`export_campaign` turns judgements into the data layer's records (`alignloop.data`) and writes
`<out_dir>/<campaign>-<format>-v<N>/` holding `data.jsonl` and `manifest.json` (what was
exported, how, what was dropped and why, the sha256 of `data.jsonl`). N counts up, so an export
never overwrites an earlier one that a training run may name. The folder is written under a
temporary name and renamed into place: a reader sees a whole dataset or none.

Formats and where they come from:

    pairs     pairwise answers -> PreferencePair (tie / both bad dropped and counted);
              with `pairs_from_rankings`, also every ordered pair of each ranking
    rankings  ranking answers  -> Ranking (best first; `ranks` keeps ties)
    ratings   rating answers   -> Rating, one per rubric axis, on the campaign's scale
    sft       edit answers     -> SFTExample (the edited or written ideal response)
    kto       pairwise answers -> BinaryFeedback (chosen desirable, rejected undesirable), and
              rating answers   -> BinaryFeedback (mean over axes above / below the scale midpoint)

Aggregations:

    all       one record per judgement
    majority  one record per unit (the same item and candidates): the answer with most votes;
              a tie at the top is dropped and counted as `no_majority`
    weighted  the same, each vote counting its evaluator's quality weight (`quality.py`);
              pairs carry `margin` = (weight for chosen - weight for rejected) / all weight
    model     the same, each vote counting |logit(η)| of its evaluator, with η each
              evaluator's reliability fitted to the campaign's pairwise and ranking judgements
              without gold items (`reliability.py`); an evaluator below chance (η < 0.5) is
              read the other way round (the other reply of a pair, a ranking reversed; their
              ties count for nothing), as the model's own posterior reads them. The manifest
              gives every evaluator's η, votes and verdict (reliable / noisy / malicious) and
              the signed weights. Pairs and rankings carry `weight` = 2σ(log-odds) − 1 of
              their order under those votes (a ranking: the mean over its ordered pairs),
              which reward-model training multiplies into each judgement's loss

Rows are written in TRL's conversational format by default (`style`; trl_formats.py): prompts
as messages, responses as assistant messages, so TRL's trainers apply the chat template to them
exactly as alignloop does; `trl-standard` writes plain strings, which TRL does not template.

Rankings are aggregated by mean rank (a Borda count): candidates with equal mean rank are tied,
which a ranking can express, so nothing is dropped for that. Edits are free text with nothing to
vote on: `sft` takes only `all`. Gold items are left out unless asked for (their answers are
known in advance and would be over-represented), and `exclude_flagged` leaves out every
judgement of an evaluator whom the quality checks flag.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import alignloop
from alignloop.data import (
    BinaryFeedback,
    PreferencePair,
    Ranking,
    Rating,
    Record,
    SFTExample,
    dataset_fingerprint,
    rankings_to_pairs,
    write_jsonl,
)
from alignloop.data.trl_formats import ROW_STYLES, RowStyle, as_read_back
from alignloop.errors import UserError
from alignloop.feedback.models import Campaign, Candidate, Item, User
from alignloop.feedback.quality import (
    TIE_CHOICES,
    JudgementFacts,
    QualityThresholds,
    campaign_report,
    dense_ranks,
    load_judgement_facts,
    preferred_candidate,
    rated_candidate,
)
from alignloop.feedback.reliability import fit_reliability, votes_from_facts

__all__ = ["FORMATS", "AGGREGATIONS", "ExportError", "ExportResult", "export_campaign", "export_campaign_from_url"]

# Format -> the task types whose judgements it is made from.
FORMATS: dict[str, frozenset[str]] = {
    "pairs": frozenset({"pairwise"}),
    "rankings": frozenset({"ranking"}),
    "ratings": frozenset({"rating"}),
    "sft": frozenset({"edit"}),
    "kto": frozenset({"pairwise", "rating"}),
}
AGGREGATIONS = ("all", "majority", "weighted", "model")
WEIGHTED = ("weighted", "model")  # the aggregations whose votes carry their evaluator's weight


class ExportError(ValueError, UserError):
    """An export that cannot be made (unknown campaign, format or aggregation, nothing to export)."""


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and what its manifest says."""

    path: Path  # the dataset folder
    version: int
    records: int
    sha256: str  # of data.jsonl
    dropped: dict[str, int]
    manifest: dict[str, Any]

    @property
    def data_file(self) -> Path:
        return self.path / "data.jsonl"

    def __str__(self) -> str:
        dropped = ", ".join(f"{reason} {count}" for reason, count in self.dropped.items()) or "none"
        return f"{self.records} records -> {self.data_file} (sha256 {self.sha256[:12]}; dropped: {dropped})"


@dataclass(frozen=True)
class _Context:
    """What record building needs besides the judgements."""

    aggregation: str
    prompts: dict[int, Any]  # item id -> prompt
    texts: dict[int, str]  # candidate id -> text
    scale: tuple[int, int]
    weights: dict[int, float]  # evaluator id -> vote weight
    dropped: Counter[str]

    def weight(self, fact: JudgementFacts) -> float:
        """A vote's weight: 1, the evaluator's quality weight, or |logit η| (`model`, whose
        opposite evaluators' ballots `_read_by_reliability` has inverted)."""
        if self.aggregation not in WEIGHTED:
            return 1.0
        weight = self.weights.get(fact.evaluator_id, 0.0)
        return abs(weight) if self.aggregation == "model" else weight

    def record(self, schema: type[Record], **fields: Any) -> Record | None:
        # The server validates answers on the way in; a row that still fails the schema (an
        # empty edit, a score off the scale) is counted rather than stopping the whole export.
        try:
            return schema(**fields)
        except ValidationError:
            self.dropped[f"invalid_{schema.__name__}"] += 1
            return None


@dataclass(frozen=True)
class _Ballot:
    """One judgement's vote on one unit (e.g. which of two candidates is better)."""

    unit: tuple[Any, ...]
    fact: JudgementFacts
    label: Any


def _inverted(ballot: _Ballot) -> _Ballot | None:
    """The ballot read the other way round: the other of two candidates, a ranking reversed; a
    tie or "both bad" has no opposite (None)."""
    if isinstance(ballot.label, dict):
        worst = max(ballot.label.values())
        return replace(ballot, label={candidate: worst + 1 - rank for candidate, rank in ballot.label.items()})
    if ballot.label in TIE_CHOICES:
        return None
    other = next(candidate for candidate in ballot.fact.shown_order[:2] if candidate != ballot.label)
    return replace(ballot, label=other)


def _read_by_reliability(ballots: Iterable[_Ballot], context: _Context) -> list[_Ballot]:
    """`model`: the ballots of evaluators below chance (logit η < 0) inverted; others as they are."""
    if context.aggregation != "model":
        return list(ballots)
    read = (ballot if context.weights.get(ballot.fact.evaluator_id, 0.0) >= 0 else _inverted(ballot)
            for ballot in ballots)
    return [ballot for ballot in read if ballot is not None]


def _units(ballots: Iterable[_Ballot], aggregation: str) -> list[list[_Ballot]]:
    """Ballots grouped by what they vote on; with `all` each judgement is its own group."""
    groups: dict[tuple[Any, ...], list[_Ballot]] = defaultdict(list)
    for ballot in ballots:
        key = ballot.unit if aggregation != "all" else (ballot.fact.judgement_id, *ballot.unit)
        groups[key].append(ballot)
    return list(groups.values())


def _confidence(log_odds: float) -> float:
    """2σ(x) − 1: the training weight of a record whose order the votes favour by log-odds x
    (0 at an even split, → 1 as they agree). Near a score difference of 0, Bradley–Terry with
    the label weighted so has the gradient of the soft label σ(x)."""
    return 2 / (1 + math.exp(-min(max(log_odds, -50.0), 50.0))) - 1


def _ranking_confidence(unit: Sequence[_Ballot], ranks: dict[int, int], context: _Context) -> float:
    """The mean confidence over the exported ranking's ordered pairs, each from the logit(η)
    votes the unit's rankings cast on it (one for it, one against, none for a tie)."""
    pairs = [(a, b) for a, b in combinations(sorted(ranks), 2) if ranks[a] != ranks[b]]
    if not pairs:
        return 0.0
    total = 0.0
    for a, b in pairs:
        sign = 1 if ranks[a] < ranks[b] else -1  # +1: a is exported as the better one
        log_odds = sum(context.weight(ballot.fact) * sign * ((ballot.label[a] < ballot.label[b]) -
                                                             (ballot.label[a] > ballot.label[b])) for ballot in unit)
        total += max(0.0, _confidence(log_odds))
    return total / len(pairs)


def _vote(ballots: Sequence[_Ballot], context: _Context) -> tuple[Any, dict[Any, float]] | None:
    """(winning label, weight per label), or None when the top is tied or carries no weight."""
    totals: dict[Any, float] = defaultdict(float)
    for ballot in ballots:
        totals[ballot.label] += context.weight(ballot.fact)
    ranked = sorted(totals.items(), key=lambda entry: -entry[1])
    if ranked[0][1] <= 0 or (len(ranked) > 1 and math.isclose(ranked[0][1], ranked[1][1])):
        context.dropped["no_majority"] += 1
        return None
    return ranked[0][0], totals


def _pairs(facts: Sequence[JudgementFacts], context: _Context) -> list[PreferencePair]:
    ballots = _read_by_reliability([
        _Ballot((f.item_id, *sorted(f.shown_order[:2])), f, preferred_candidate(f))
        for f in facts if f.task_type == "pairwise"
    ], context)
    pairs = []
    for unit in _units(ballots, context.aggregation):
        outcome = _vote(unit, context)
        if outcome is None:
            continue
        winner, totals = outcome
        if winner in TIE_CHOICES:
            context.dropped[winner] += 1
            continue
        loser = next(candidate for candidate in unit[0].fact.shown_order[:2] if candidate != winner)
        margin = weight = None
        if context.aggregation in WEIGHTED:
            margin = (totals[winner] - totals.get(loser, 0.0)) / sum(totals.values())
        if context.aggregation == "model":  # the votes are logit(η): their difference is the log-odds
            weight = _confidence(totals[winner] - totals.get(loser, 0.0))
        pairs.append(context.record(
            PreferencePair, prompt=context.prompts[unit[0].fact.item_id], chosen=context.texts[winner],
            rejected=context.texts[loser], margin=margin, weight=weight,
        ))
    return [pair for pair in pairs if pair is not None]


def _mean_ranks(unit: Sequence[_Ballot], context: _Context) -> dict[int, int] | None:
    """Candidates re-ranked densely by their (weighted) mean rank; None when no vote has weight."""
    total = sum(context.weight(ballot.fact) for ballot in unit)
    if total <= 0:
        context.dropped["no_majority"] += 1
        return None
    sums: dict[int, float] = defaultdict(float)
    for ballot in unit:
        for candidate, rank in ballot.label.items():
            sums[candidate] += context.weight(ballot.fact) * rank
    # Rounded so that means equal up to float noise count as a tie.
    return dense_ranks({candidate: round(rank_sum / total, 9) for candidate, rank_sum in sums.items()})


def _rankings(facts: Sequence[JudgementFacts], context: _Context) -> list[Ranking]:
    ballots = []
    for fact in facts:
        if fact.task_type == "ranking":
            ranks = dense_ranks(fact.answer["ranks"])
            ballots.append(_Ballot((fact.item_id, *sorted(ranks)), fact, ranks))
    ballots = _read_by_reliability(ballots, context)
    rankings = []
    for unit in _units(ballots, context.aggregation):
        ranks = _mean_ranks(unit, context)
        if ranks is None:
            continue
        if len(set(ranks.values())) == 1:
            context.dropped["all_tied"] += 1
            continue
        order = sorted(ranks, key=lambda candidate: (ranks[candidate], candidate))
        weight = _ranking_confidence(unit, ranks, context) if context.aggregation == "model" else None
        rankings.append(context.record(
            Ranking, prompt=context.prompts[unit[0].fact.item_id], responses=[context.texts[c] for c in order],
            ranks=[ranks[c] for c in order], weight=weight,
        ))
    return [ranking for ranking in rankings if ranking is not None]


def _ratings(facts: Sequence[JudgementFacts], context: _Context) -> list[Rating]:
    ballots = [
        _Ballot((f.item_id, rated_candidate(f), axis), f, float(score))
        for f in facts if f.task_type == "rating" for axis, score in sorted(f.answer["scores"].items())
    ]
    ratings = []
    for unit in _units(ballots, context.aggregation):
        outcome = _vote(unit, context)
        if outcome is not None:
            item, candidate, axis = unit[0].unit
            ratings.append(context.record(
                Rating, prompt=context.prompts[item], response=context.texts[candidate], score=outcome[0],
                scale_min=context.scale[0], scale_max=context.scale[1], axis=axis,
            ))
    return [rating for rating in ratings if rating is not None]


def _sft(facts: Sequence[JudgementFacts], context: _Context) -> list[SFTExample]:
    examples = [
        context.record(SFTExample, prompt=context.prompts[f.item_id], response=f.answer.get("text"))
        for f in facts if f.task_type == "edit"
    ]
    return [example for example in examples if example is not None]


def _rating_is_good(fact: JudgementFacts, midpoint: float, context: _Context) -> bool | None:
    """Whether a rating's mean over its axes is above the scale midpoint; None (counted) when neither."""
    scores = list(fact.answer["scores"].values())
    mean = sum(scores) / len(scores) if scores else None
    if mean is None or mean == midpoint:
        context.dropped["at_midpoint" if scores else "no_scores"] += 1
        return None
    return mean > midpoint


def _kto(facts: Sequence[JudgementFacts], context: _Context) -> list[BinaryFeedback]:
    feedback = []
    for pair in _pairs(facts, context):
        feedback += [BinaryFeedback(prompt=pair.prompt, response=pair.chosen, label=True),
                     BinaryFeedback(prompt=pair.prompt, response=pair.rejected, label=False)]
    midpoint = (context.scale[0] + context.scale[1]) / 2
    ballots = []
    for fact in facts:
        if fact.task_type == "rating":
            good = _rating_is_good(fact, midpoint, context)
            if good is not None:
                ballots.append(_Ballot((fact.item_id, rated_candidate(fact)), fact, good))
    for unit in _units(ballots, context.aggregation):
        outcome = _vote(unit, context)
        if outcome is not None:
            item, candidate = unit[0].unit
            record = context.record(
                BinaryFeedback, prompt=context.prompts[item], response=context.texts[candidate], label=outcome[0]
            )
            feedback += [record] if record is not None else []
    return feedback


_BUILDERS: dict[str, Callable[[Sequence[JudgementFacts], _Context], list[Record]]] = {
    "pairs": _pairs, "rankings": _rankings, "ratings": _ratings, "sft": _sft, "kto": _kto,
}


# ---------------------------------------------------------------- writing


def _slug(name: str) -> str:
    """A campaign name made safe as part of a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "campaign"


def _next_version(out_dir: Path, stem: str) -> int:
    pattern = re.compile(rf"{re.escape(stem)}-v(\d+)")
    versions = [int(match.group(1)) for path in out_dir.iterdir() if (match := pattern.fullmatch(path.name))]
    return max(versions, default=0) + 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _publish(
    out_dir: Path, stem: str, records: Sequence[Record], manifest: dict[str, Any], style: RowStyle
) -> ExportResult:
    """Write data and manifest into a temporary folder, then rename it to the next free version."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=out_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; the dataset is for trainers run by anyone
    try:
        write_jsonl(staging / "data.jsonl", records, style)
        manifest = {**manifest, "sha256": _sha256(staging / "data.jsonl")}
        while True:
            version = _next_version(out_dir, stem)
            manifest["version"] = version
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
            final = out_dir / f"{stem}-v{version}"
            try:
                os.rename(staging, final)
                break
            except OSError as error:  # another export took this version first: take the next one
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(final, version, len(records), manifest["sha256"], manifest["dropped"], manifest)


# ---------------------------------------------------------------- the export


def _check_options(fmt: str, aggregation: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if aggregation not in AGGREGATIONS:
        raise ExportError(f"unknown aggregation {aggregation!r}; expected one of {', '.join(AGGREGATIONS)}")
    if fmt == "sft" and aggregation != "all":
        raise ExportError(f"sft exports every edit (free text has no majority); aggregation must be 'all', "
                          f"got {aggregation!r}")
    if fmt in ("ratings", "kto") and aggregation == "model":
        raise ExportError(f"aggregation 'model' learns reliability from the order of candidates (pairwise and "
                          f"ranking answers), and {fmt} exports read rating answers, which have none; "
                          "use 'weighted' or 'majority'")


def _select_facts(
    facts: Sequence[JudgementFacts], task_types: frozenset[str], gold_items: set[int], excluded: set[int],
    include_gold: bool, dropped: Counter[str],
) -> list[JudgementFacts]:
    """The judgements the format uses, item by item; gold and flagged ones counted as dropped."""
    kept = []
    for fact in sorted(facts, key=lambda f: (f.item_id, f.judgement_id)):
        if fact.task_type not in task_types:
            continue
        if fact.item_id in gold_items and not include_gold:
            dropped["gold_item"] += 1
        elif fact.evaluator_id in excluded:
            dropped["flagged_evaluator"] += 1
        else:
            kept.append(fact)
    return kept


def _load_context(session: Session, campaign: Campaign, aggregation: str, weights: dict[int, float]) -> _Context:
    prompts = dict(session.execute(select(Item.id, Item.prompt).where(Item.campaign_id == campaign.id)).all())
    texts = dict(session.execute(
        select(Candidate.id, Candidate.text).join(Item, Candidate.item_id == Item.id)
        .where(Item.campaign_id == campaign.id)
    ).all())
    return _Context(aggregation, prompts, texts, (campaign.scale_min, campaign.scale_max), weights, Counter())


def export_campaign(
    session: Session,
    campaign_name: str,
    fmt: str,
    out_dir: str | Path,
    aggregation: str = "all",
    exclude_flagged: bool = False,
    thresholds: QualityThresholds | None = None,
    include_gold: bool = False,
    pairs_from_rankings: bool = False,
    style: RowStyle = "trl-conversational",
) -> ExportResult:
    """Write one campaign's judgements as a versioned dataset folder (see the module docstring)."""
    out_dir = _output_folder(out_dir)  # before any work: a file in the way fails at once
    _check_options(fmt, aggregation)
    if style not in ROW_STYLES:
        raise ExportError(f"unknown style {style!r}; known: {', '.join(ROW_STYLES)}")
    campaign = session.scalars(select(Campaign).where(Campaign.name == campaign_name)).one_or_none()
    if campaign is None:
        raise ExportError(f"no campaign named {campaign_name!r}")
    weights: dict[int, float] = {}
    flagged: dict[int, tuple[str, ...]] = {}
    every_fact = load_judgement_facts(session, campaign.id)
    if aggregation == "weighted" or exclude_flagged:
        quality = campaign_report(session, campaign.id, thresholds)
        weights = quality.weights()
        flagged = {row.evaluator_id: row.flags for row in quality.flagged} if exclude_flagged else {}
    reliability = fit_reliability(votes_from_facts(every_fact)) if aggregation == "model" else None
    if reliability is not None:
        weights = reliability.vote_weights(signed=True)
    context = _load_context(session, campaign, aggregation, weights)
    gold_items = set(session.scalars(select(Item.id).where(Item.campaign_id == campaign.id, Item.is_gold)))
    task_types = FORMATS[fmt] | ({"ranking"} if fmt == "pairs" and pairs_from_rankings else set())
    facts = _select_facts(every_fact, task_types, gold_items, set(flagged), include_gold, context.dropped)
    records = _BUILDERS[fmt](facts, context)
    if fmt == "pairs" and pairs_from_rankings:
        records += rankings_to_pairs(_rankings(facts, context))
    if not records:
        raise ExportError(_nothing_to_export(campaign_name, fmt, aggregation, dict(context.dropped)))
    usernames = dict(session.execute(select(User.id, User.username)).all())
    manifest = {
        "campaign": campaign.name, "format": fmt, "style": style, "aggregation": aggregation,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "records": len(records), "dropped": dict(sorted(context.dropped.items())),
        # The hash trainers store as the data fingerprint: of the records as they read them back.
        "fingerprint": dataset_fingerprint(as_read_back(record, style) for record in records),
        "include_gold": include_gold, "exclude_flagged": exclude_flagged, "pairs_from_rankings": pairs_from_rankings,
        "evaluators": {
            "included": sorted(usernames[e] for e in {fact.evaluator_id for fact in facts}),
            "excluded": {usernames[e]: list(reasons) for e, reasons in sorted(flagged.items())},
        },
        "weights": {usernames[e]: w for e, w in sorted(context.weights.items())} if aggregation in WEIGHTED else None,
        "reliability": None if reliability is None else {
            usernames[e]: {"reliability": round(eta, 4), "votes": reliability.votes[e], "verdict": reliability.verdict(e)}
            for e, eta in sorted(reliability.reliability.items())
        },
        "alignloop_version": alignloop.__version__,
    }
    return _publish(out_dir, f"{_slug(campaign.name)}-{fmt}", records, manifest, style)


def _nothing_to_export(campaign: str, fmt: str, aggregation: str, dropped: dict[str, int]) -> str:
    """Why an export came out empty, and what would help: only advice that changes something."""
    advice = ["collect more judgements"]
    if aggregation != "all":
        advice.append("export with aggregation 'all' (every judgement, no agreement needed)")
    if dropped.get("gold_item"):
        advice.append("add --include-gold")
    if dropped.get("flagged_evaluator"):
        advice.append("leave out --exclude-flagged")
    return (f"campaign {campaign!r} has nothing to export as {fmt} with aggregation {aggregation!r} "
            f"(dropped: {dropped or 'none'}); {', or '.join(advice)}")


def _output_folder(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: a file is there; expected a folder to put <campaign>-<format>-v<N>/ in")
    return out


def export_campaign_from_url(
    db_url: str, campaign_name: str, fmt: str, out_dir: str | Path, **options: Any
) -> ExportResult:
    """`export_campaign` on a database URL (SQLite file or PostgreSQL), for the CLI."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        # create_engine would quietly create an empty file at a mistyped path.
        raise ExportError(f"no SQLite database at {url.database}")
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return export_campaign(session, campaign_name, fmt, out_dir, **options)
    finally:
        engine.dispose()
