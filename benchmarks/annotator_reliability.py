"""Who is malicious, found without gold items: the reliability model across noise and malicious shares.

    alignloop demo output_dir=runs/demo        # a campaign's prompts and candidates
    python benchmarks/annotator_reliability.py runs/demo --seeds 0 1 2

The candidates of the loop's round-1 campaign (the demo: 160 prompts x 4 replies), scored once
by the gold scorer its annotators followed, are ranked by teams of scripted annotators answering
exactly as the loop's do (`alignloop.loop.annotators.answer_from_scores`: honest ones follow
the scorer with `noise` random answers and a tie margin, malicious ones invert it), each item by
`--overlap` of them in a random display order. For every noise level x malicious share x seed,
`alignloop.feedback.reliability` is fitted to the rankings alone (no gold item, no server: the
answers are those the HTTP API would store) and its verdicts are counted: the share of malicious
annotators it calls malicious, and of honest ones it calls malicious or noisy. Writes
annotator_reliability.json under benchmarks/results/<cpu>/.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_description, results_dir  # noqa: E402


def campaign_items(loop_dir: Path) -> list[tuple[Any, list[tuple[int, str]]]]:
    """(prompt, [(candidate id, text)]) of every regular item of the loop's round-1 campaign."""
    from sqlalchemy import select

    from alignloop.feedback import service
    from alignloop.feedback.database import make_engine, make_session_factory, upgrade
    from alignloop.feedback.models import Candidate, Item
    from alignloop.loop.config import LoopConfig
    from alignloop.loop.state import load_state

    loop = LoopConfig.model_validate(yaml.safe_load((loop_dir / "config.yaml").read_text()))
    campaign_name = load_state(loop_dir, loop.rounds, resume=True).artifact(1, "campaign")
    upgrade(loop.db_url)  # a run made by an earlier alignloop: its schema as this one reads it, as every command does
    store = make_session_factory(make_engine(loop.db_url))
    with store() as session:
        campaign = service.campaign_by_name(session, campaign_name)
        items = session.scalars(select(Item).where(Item.campaign_id == campaign.id, ~Item.is_gold).order_by(Item.id))
        return [(item.prompt, [(c.id, c.text) for c in session.scalars(
            select(Candidate).where(Candidate.item_id == item.id).order_by(Candidate.id))]) for item in items]


def team(count: int, malicious: int, noise: float, tie_margin: float, seed: int) -> list:
    from alignloop.loop.annotators import ScriptedAnnotator

    bad = set(random.Random(seed).sample(range(count), malicious))
    return [ScriptedAnnotator(name=f"a{i}", user_id=i, token="", kind="malicious" if i in bad else "honest",
                              noise=noise, position_bias=0.0, tie_margin=tie_margin, rating_range=(0.0, 1.0),
                              seed=seed, index=i) for i in range(count)]


def judgements(items, scores: dict[int, float], annotators: list, overlap: int, seed: int) -> list:
    """Every item ranked by `overlap` annotators drawn at random, in a random display order."""
    from alignloop.loop.annotators import answer_from_scores, task_rng
    from alignloop.feedback.quality import JudgementFacts

    rng = random.Random(seed)
    facts = []
    for item_id, (prompt, candidates) in enumerate(items):
        for annotator in rng.sample(annotators, overlap):
            shown = rng.sample(candidates, len(candidates))
            task = {"task_type": "ranking", "prompt": prompt, "candidates": [{"id": i, "text": t} for i, t in shown]}
            answer = answer_from_scores(annotator, task, [scores[i] for i, _ in shown], task_rng(annotator, task))
            facts.append(JudgementFacts(len(facts), item_id, annotator.user_id, "ranking", answer,
                                        tuple(i for i, _ in shown)))
    return facts


def detection(annotators: list, fit) -> dict[str, float]:
    malicious = [a for a in annotators if a.kind == "malicious"]
    honest = [a for a in annotators if a.kind == "honest"]
    return {
        "malicious_found": sum(fit.verdict(a.user_id) == "malicious" for a in malicious) / max(len(malicious), 1),
        "honest_called_malicious": sum(fit.verdict(a.user_id) == "malicious" for a in honest) / max(len(honest), 1),
        "honest_not_reliable": sum(fit.verdict(a.user_id) != "reliable" for a in honest) / max(len(honest), 1),
        "malicious_eta_max": max((fit.reliability[a.user_id] for a in malicious), default=None),
        "honest_eta_min": min(fit.reliability[a.user_id] for a in honest),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("loop_dir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--annotators", type=int, default=10)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--malicious", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--tie-margin", type=float, default=0.05)
    args = parser.parse_args()

    from alignloop.feedback.reliability import fit_reliability, votes_from_facts
    from alignloop.rewards import build_reward_source
    from alignloop.rewards.config import RewardSourceConfig

    console = Console()
    items = campaign_items(args.loop_dir)
    loop = yaml.safe_load((args.loop_dir / "config.yaml").read_text())
    scorer = build_reward_source(RewardSourceConfig.model_validate(
        loop.get("feedback", {}).get("annotators", {}).get("preference") or {"type": "toxicity"}))
    flat = [(prompt, i, text) for prompt, candidates in items for i, text in candidates]
    scores = dict(zip((i for _, i, _ in flat), scorer([p for p, _, _ in flat], [t for _, _, t in flat])))
    rows = []
    started = time.perf_counter()
    for noise in args.noise:
        for share in args.malicious:
            for seed in args.seeds:
                annotators = team(args.annotators, round(share * args.annotators), noise, args.tie_margin, seed)
                fit = fit_reliability(votes_from_facts(judgements(items, scores, annotators, args.overlap, seed)))
                rows.append({"noise": noise, "malicious_share": share, "seed": seed, "iterations": fit.iterations,
                             **detection(annotators, fit)})
    results = {**cpu_description(), "settings": {**vars(args), "loop_dir": str(args.loop_dir)}, "items": len(items),
               "seconds": time.perf_counter() - started, "rows": rows}
    out = results_dir() / "annotator_reliability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))

    table = Table(title=f"reliability model, no gold items: {len(items)} items, {args.annotators} annotators, "
                        f"overlap {args.overlap}, {len(args.seeds)} seeds (worst seed)")
    for column in ("noise", "malicious", "malicious found", "honest called malicious", "honest not 'reliable'",
                   "max η malicious", "min η honest"):
        table.add_column(column)
    for noise in args.noise:
        for share in args.malicious:
            group = [r for r in rows if r["noise"] == noise and r["malicious_share"] == share]
            etas = [r["malicious_eta_max"] for r in group if r["malicious_eta_max"] is not None]
            table.add_row(f"{noise:.0%}", f"{share:.0%}",
                          "–" if share == 0 else f"{min(r['malicious_found'] for r in group):.0%}",
                          f"{max(r['honest_called_malicious'] for r in group):.0%}",
                          f"{max(r['honest_not_reliable'] for r in group):.0%}",
                          f"{max(etas):.3f}" if etas else "–", f"{min(r['honest_eta_min'] for r in group):.3f}")
    console.print(table)
    console.print(f"wrote {out} ({results['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
