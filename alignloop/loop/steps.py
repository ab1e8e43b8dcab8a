"""The steps of one round. Each reads what earlier steps recorded in the loop state and returns
what it produced (paths, counts) for the state to record.

The policy carries over between rounds as its LoRA adapter: round n starts from round n-1's
adapter on the unchanged base model, so the frozen reference (adapters off) is the starting
model in every round and KL is always measured against it. The reward model of round n is
trained afresh on the feedback of rounds 1..n (a growing dataset, one consistent model).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import func, select

from alignloop.algorithms.reward import RewardConfig, run_reward
from alignloop.data import PromptOnly, read_records
from alignloop.engine import latest_checkpoint, read_metrics
from alignloop.evaluation.policy_eval import EvalConfig, evaluate as run_eval
from alignloop.feedback import service
from alignloop.feedback.database import make_engine, make_session_factory, transaction, upgrade
from alignloop.feedback.export import export_campaign_from_url
from alignloop.feedback.imports import import_records
from alignloop.feedback.models import Item, Judgement, User
from alignloop.loop import annotators as scripted
from alignloop.loop.annotator_checks import annotator_quality_rows, gold_items_from_scores
from alignloop.loop.config import LoopConfig, LoopPrompts
from alignloop.loop.generate import generate_candidates
from alignloop.loop.judges import JudgeScorer, build_judge, create_judge_annotators, route_items
from alignloop.loop.recipes import annotators_recipe, eval_recipe, reward_model_recipe, rl_method, rl_recipe
from alignloop.loop.select import select_round_items
from alignloop.loop.server import feedback_server
from alignloop.loop.state import LoopState
from alignloop.report import write_loop_report
from alignloop.report.model_card import write_model_card
from alignloop.rewards import build_reward_source

@dataclass
class RoundContext:
    config: LoopConfig
    state: LoopState
    number: int
    console: Console

    @property
    def loop_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def round_dir(self) -> Path:
        return self.loop_dir / "rounds" / f"round-{self.number}"

    @property
    def campaign(self) -> str:
        return f"{self.loop_dir.name}-round-{self.number}"

    def previous_adapter(self) -> str | None:
        """The policy adapter of the last round that trained one (None: the starting model)."""
        for earlier in range(self.number - 1, 0, -1):
            adapter = self.state.artifact(earlier, "policy_adapter")
            if adapter:
                return adapter
        return None

    def exports_so_far(self) -> list[str]:
        """The preference files (pairs or rankings) exported by rounds 1..n."""
        files = (self.state.artifact(n, "preferences") for n in range(1, self.number + 1))
        return [path for path in files if path]


# ------------------------------------------------------------------ generate
def round_prompts(prompts: LoopPrompts, number: int, pool: int = 1) -> list[dict[str, Any]]:
    """The training prompts of round `number`: the next `pool` x `per_round` records (the pool
    that active selection chooses `per_round` from), cycling through the file."""
    records = read_records(prompts.train, PromptOnly, split=prompts.train_split())
    count = pool * prompts.per_round
    start = (number - 1) * count
    return [{"prompt": records[(start + i) % len(records)].prompt} for i in range(min(count, len(records)))]


def generate(ctx: RoundContext) -> dict[str, Any]:
    """A campaign of this round's prompts (pairwise or ranking tasks), filled with K candidates
    from the current policy."""
    cfg = ctx.config
    upgrade(cfg.db_url)
    store = make_session_factory(make_engine(cfg.db_url))
    with transaction(store) as session:
        if service.campaign_by_name(session, ctx.campaign) is None:  # absent unless a run stopped mid-step
            campaign = service.create_campaign(
                session, ctx.campaign, [cfg.feedback.task], overlap=cfg.feedback.overlap, guidelines=cfg.feedback.guidelines,
                min_seconds=cfg.feedback.min_seconds,
            )
            import_records(session, campaign, round_prompts(cfg.prompts, ctx.number, cfg.feedback.selection_pool),
                           label=cfg.prompts.train)
    model = cfg.model.name
    stored = generate_candidates(cfg.db_url, ctx.campaign, model, cfg.candidates.k, cfg.candidates.sampling,
                                 ctx.previous_adapter(), seed=cfg.seed + ctx.number)
    outcome = {"campaign": ctx.campaign, "candidates": stored}
    if cfg.feedback.selection_pool > 1:
        previous = ctx.state.artifact(ctx.number - 1, "reward_model") if ctx.number > 1 else None
        outcome |= select_round_items(cfg.db_url, ctx.campaign, how=cfg.feedback.selection, keep=cfg.prompts.per_round,
                                      reward_model=previous, seed=cfg.seed + ctx.number)
        ctx.console.print(f"[bold]selection[/]: {outcome['selected_items']} of {outcome['pool_items']} items "
                          f"({outcome['selection_reason']})")
    return outcome


# ------------------------------------------------------------------ feedback
def feedback(ctx: RoundContext) -> dict[str, Any]:
    if ctx.config.feedback.source == "scripted":
        return scripted_feedback(ctx)
    return wait_for_people(ctx)


def scripted_feedback(ctx: RoundContext) -> dict[str, Any]:
    """Scripted annotators answer every task of the campaign over the real HTTP API."""
    cfg = ctx.config
    settings = scripted.AnnotatorsConfig.model_validate(annotators_recipe(cfg, ctx.number))
    store = make_session_factory(make_engine(cfg.db_url))
    scorer = build_reward_source(settings.preference)
    with transaction(store) as session:
        campaign = service.campaign_by_name(session, ctx.campaign)
        campaign_id = campaign.id
        if not any(item.is_gold for item in campaign.items):  # absent unless a run stopped mid-step
            add_gold_items(session, campaign, scorer, cfg.feedback.gold_items, cfg.feedback.gold_min_gap)
        team = scripted.create_annotators(session, settings, prefix=f"{ctx.campaign}-annotator")
        judges = prepare_judges(ctx, session, campaign)
    with feedback_server(cfg.db_url, assignment_seed=settings.seed) as base_url:  # the same judgements every run
        stats = scripted.run_annotators(base_url, team, campaign_id, settings, quota=None, scorer=scorer)
        judged = run_judges(ctx, base_url, campaign_id, judges, settings)
    with store() as session:
        quality = annotator_quality_rows(session, campaign_id, team + judges)
    ctx.round_dir.mkdir(parents=True, exist_ok=True)
    (ctx.round_dir / "annotators.json").write_text(json.dumps(quality, indent=2), encoding="utf-8")
    ctx.console.print(f"[bold]feedback[/]: {stats}; flagged {quality['malicious_flagged']} of "
                      f"{quality['malicious']} malicious annotators, {quality['honest_flagged']} honest ones")
    return {"annotators": str(ctx.round_dir / "annotators.json"), **judged}


def prepare_judges(ctx: RoundContext, session, campaign) -> list[scripted.ScriptedAnnotator]:
    """The round's AI judge accounts, and the routing of its items between them and people."""
    cfg = ctx.config.feedback
    if not cfg.judges:
        return []
    if cfg.route_to_people is not None:
        previous = ctx.state.artifact(ctx.number - 1, "reward_model") if ctx.number > 1 else None
        routed = route_items(session, campaign, cfg.route_to_people, previous, ctx.config.seed + ctx.number)
        ctx.console.print(f"[bold]routing[/]: {routed['to_people']} items to people, {routed['to_judges']} to "
                          f"AI judges ({routed['routing']})")
    return create_judge_annotators(session, len(cfg.judges), f"{ctx.campaign}-judge", ctx.config.seed)


def run_judges(ctx: RoundContext, base_url: str, campaign_id: int, judges: list[scripted.ScriptedAnnotator],
               settings: scripted.AnnotatorsConfig) -> dict[str, Any]:
    """Every AI judge answers what is left for it, one after the other, each with its own model."""
    counts: dict[str, Any] = {}
    for account, judge_settings in zip(judges, ctx.config.feedback.judges):
        scorer = JudgeScorer(build_judge(judge_settings, ctx.config.feedback.guidelines))
        stats = scripted.run_annotators(base_url, [account], campaign_id, settings, quota=None, scorer=scorer)
        ctx.console.print(f"[bold]AI judge[/] {account.name} ({judge_settings.type} {judge_settings.model}): {stats}")
        counts[f"judgements_by_{account.name}"] = stats.judgements
    return counts


def add_gold_items(session, campaign, scorer, limit: int, min_gap: float) -> int:
    """Copies of the round's clearest pairs (by the scripted annotators' own scorer) with the
    known answer: honest annotators get them right, malicious ones wrong — what gold accuracy
    measures. Returns how many were added."""
    items = [item for item in campaign.items if len(item.candidates) >= 2 and not item.held_back]
    if limit == 0 or not items:
        return 0
    texts = [[c.text for c in item.candidates] for item in items]
    flat = scorer([item.prompt for item, row in zip(items, texts) for _ in row], [t for row in texts for t in row])
    scores, start = [], 0
    for row in texts:
        scores.append(flat[start : start + len(row)])
        start += len(row)
    rows = gold_items_from_scores([item.prompt for item in items], texts, scores, min_gap=min_gap, limit=limit)
    if rows:
        import_records(session, campaign, rows, label="gold items")
    return len(rows)


def wait_for_people(ctx: RoundContext) -> dict[str, Any]:
    """Poll the database until every item has `overlap` judgements (people answer in the web app)."""
    cfg = ctx.config
    store = make_session_factory(make_engine(cfg.db_url))
    if cfg.feedback.judges:  # the judges answer first, through the same API
        with transaction(store) as session:
            campaign = service.campaign_by_name(session, ctx.campaign)
            campaign_id, judges = campaign.id, prepare_judges(ctx, session, campaign)
        with feedback_server(cfg.db_url) as base_url:
            run_judges(ctx, base_url, campaign_id, judges, scripted.AnnotatorsConfig())
    started = time.monotonic()
    while True:
        with store() as session:
            campaign = service.campaign_by_name(session, ctx.campaign)
            items = session.scalar(select(func.count()).where(  # what people are asked to judge
                Item.campaign_id == campaign.id, ~Item.is_gold, ~Item.held_back, Item.audience != "judges")) or 0
            judged = session.scalar(select(func.count()).select_from(Judgement).join(User).where(
                Judgement.campaign_id == campaign.id, ~User.is_ai_judge)) or 0
        wanted = items * cfg.feedback.overlap
        if judged >= wanted:
            return {"judgements": judged}
        if cfg.feedback.wait_timeout_s and time.monotonic() - started > cfg.feedback.wait_timeout_s:
            raise TimeoutError(f"campaign {ctx.campaign!r}: {judged} of {wanted} judgements after "
                               f"{cfg.feedback.wait_timeout_s:.0f} s (feedback.wait_timeout_s); resume the loop later")
        ctx.console.print(f"waiting for feedback on {ctx.campaign!r}: {judged} / {wanted} judgements")
        time.sleep(cfg.feedback.poll_seconds)


# ------------------------------------------------------------------ export
def export(ctx: RoundContext) -> dict[str, Any]:
    cfg = ctx.config
    fmt = "rankings" if cfg.feedback.task == "ranking" else "pairs"  # every later stage reads both
    result = export_campaign_from_url(cfg.db_url, ctx.campaign, fmt, ctx.round_dir / "feedback",
                                      aggregation=cfg.feedback.aggregation, exclude_flagged=cfg.feedback.exclude_flagged)
    ctx.console.print(f"[bold]export[/]: {result}")
    return {"preferences": str(result.data_file), "preference_records": result.records}


# ------------------------------------------------------------------ reward model
def resume_flag(run_dir: Path) -> bool:
    """Resume a stage that was interrupted after writing checkpoints."""
    return latest_checkpoint(run_dir / "checkpoints") is not None


def reward_model(ctx: RoundContext) -> dict[str, Any]:
    out = ctx.round_dir / "rm"
    recipe = reward_model_recipe(ctx.config, ctx.exports_so_far(), out, ctx.config.seed)
    result = run_reward(RewardConfig.model_validate(recipe), resume=resume_flag(out))
    return {"reward_model": str(result.final_model_dir)}


# ------------------------------------------------------------------ RL
def rl(ctx: RoundContext) -> dict[str, Any]:
    config_class, run = rl_method(ctx.config.rl.method)
    out = ctx.round_dir / "rl"
    recipe = rl_recipe(ctx.config, ctx.previous_adapter(), ctx.exports_so_far(),
                       ctx.state.artifact(ctx.number, "reward_model"), out, ctx.config.seed + ctx.number)
    result = run(config_class.model_validate(recipe), resume=resume_flag(out))
    return {"policy_adapter": str(result.final_model_dir), "rl_run": str(out)}


# ------------------------------------------------------------------ evaluate and report
def evaluate(ctx: RoundContext) -> dict[str, Any]:
    recipe = eval_recipe(ctx.config, ctx.state.artifact(ctx.number, "reward_model"),
                         ctx.state.artifact(ctx.number, "policy_adapter"), ctx.round_dir / "eval.json")
    run_eval(EvalConfig.model_validate(recipe), ctx.console)
    policy = Path(ctx.state.artifact(ctx.number, "policy_adapter"))
    if (policy.parent / "config.yaml").is_file():  # the card of the round's policy gains the eval table
        write_model_card(policy.parent, policy)
    return {"eval": str(ctx.round_dir / "eval.json")}


def last_eval_accuracy(metrics_file: Path) -> float | None:
    """The reward model's last held-out accuracy: pairwise accuracy, from pairs or from rankings."""
    accuracy = None
    for record in read_metrics(metrics_file) if metrics_file.is_file() else []:
        # eval/rewards/accuracy: the name before TRL's, in run folders alignloop wrote earlier.
        for key in ("eval/rewards/accuracies", "eval/rewards/accuracy", "eval/ranking/pairwise_accuracy"):
            if isinstance(record.get(key), (int, float)):
                accuracy = float(record[key])
    return accuracy


def judgement_count(db_url: str, campaign: str, by_ai_judges: bool | None = None) -> int:
    """The campaign's judgements: all, or only those of AI judges (True) or of people (False)."""
    with make_session_factory(make_engine(db_url))() as session:
        found = service.campaign_by_name(session, campaign)
        if found is None:
            return 0
        query = select(func.count()).select_from(Judgement).where(Judgement.campaign_id == found.id)
        if by_ai_judges is not None:
            query = query.join(User).where(User.is_ai_judge.is_(by_ai_judges))
        return session.scalar(query) or 0


def write_round_summary(ctx: RoundContext) -> Path:
    """rounds/round-N/summary.json: the round's numbers for the report's per-round table."""
    artifacts = ctx.state.artifacts.get(str(ctx.number), {})
    summary = {
        "round": ctx.number,
        "judgements": judgement_count(ctx.config.db_url, ctx.campaign),
        "rm_eval_accuracy": last_eval_accuracy(ctx.round_dir / "rm" / "metrics.jsonl"),
        "candidates": artifacts.get("candidates"),
        "preference_records": artifacts.get("preference_records"),
        "minutes": round(sum(v for k, v in artifacts.items() if k.startswith("seconds_")) / 60, 1),
    }
    if ctx.config.feedback.judges:
        summary["judgements_by_people"] = judgement_count(ctx.config.db_url, ctx.campaign, by_ai_judges=False)
        summary["judgements_by_ai_judges"] = judgement_count(ctx.config.db_url, ctx.campaign, by_ai_judges=True)
    for name in ("pool_items", "selected_items", "selection_score_selected_mean", "selection_score_held_back_mean"):
        if artifacts.get(name) is not None:
            summary[name] = artifacts[name]
    path = ctx.round_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return path


def report(ctx: RoundContext) -> dict[str, Any]:
    write_round_summary(ctx)
    return {"report": str(write_loop_report(ctx.loop_dir))}


STEP_FUNCTIONS = {
    "generate": generate,
    "feedback": feedback,
    "export": export,
    "reward_model": reward_model,
    "rl": rl,
    "evaluate": evaluate,
    "report": report,
}
