"""Fill a campaign with model outputs: K sampled responses per prompt, stored as candidates.

It imports torch (through the model and rollout code), so it lives with the loop, not in the
store package (`alignloop.feedback`, which the web server imports and keeps torch-free): it runs
as a loop stage or as its own process (`alignloop feedback generate`), never inside the web
server. The server and this job meet only in the database.

The job is idempotent: an item is topped up to K candidates *from this model*, so a rerun after
an interruption (or after new prompts were imported) generates only what is missing. Each batch
of samples is stored in its own transaction, so an interruption loses at most the batch in
flight. Gold items are left alone: their known answers name their curated candidates, and new
candidates would change the question being asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from alignloop.data import PromptOnly, encode_prompt
from alignloop.engine.progress import TrainingProgress
from alignloop.engine.rollout import HFRolloutEngine, SamplingConfig
from alignloop.errors import UserError
from alignloop.feedback.database import make_engine
from alignloop.feedback.models import Campaign, Candidate, Item
from alignloop.hardware import resolve_weight_dtype
from alignloop.models import ModelConfig, load_model_and_tokenizer, load_saved_adapter

__all__ = ["CampaignNotFoundError", "generate_candidates", "model_label"]

# Sampling settings that shape the text (batch size and engine do not), recorded per candidate.
RECORDED_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "max_new_tokens", "min_new_tokens")


class CampaignNotFoundError(LookupError, UserError):
    pass


@dataclass(frozen=True)
class SampleRequest:
    """One response to generate: for which item, from which prompt tokens."""

    item_id: int
    prompt_ids: list[int]


def model_label(model_name: str, adapter: str | None) -> str:
    """What `Candidate.model` records: the model, and the adapter on top of it if any (a base
    model with and without an adapter are different writers)."""
    return model_name if adapter is None else f"{model_name}+{adapter}"


def generate_candidates(
    db_url: str,
    campaign_name: str,
    model_name: str,
    k: int,
    sampling: SamplingConfig | None = None,
    adapter: str | None = None,
    *,
    dtype: str = "auto",
    seed: int = 0,
    show_progress: bool = True,
) -> int:
    """Sample responses until every non-gold item of `campaign_name` has `k` candidates from this
    model (`model_name`, plus the LoRA `adapter` folder if given); returns how many were stored.

    `sampling.batch_size` responses are generated and committed together; batch i is sampled
    with seed `seed + i`. The model is not loaded when nothing is missing.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    sampling = sampling or SamplingConfig()
    if sampling.engine != "hf":
        raise ValueError(f"sampling.engine={sampling.engine!r} is not supported here yet; use 'hf'")
    label = model_label(model_name, adapter)
    engine = make_engine(db_url)  # set up to share the database with a running server
    try:
        shortfalls = missing_candidates(engine, campaign_name, label, k)
        if not shortfalls:
            return 0
        dtype, why = resolve_weight_dtype(dtype)
        if show_progress:
            Console(highlight=False).print(f"[bold]precision[/]: {why}", soft_wrap=True)
        model, tokenizer = load_generator(model_name, adapter, dtype)
        rollout = HFRolloutEngine(model, tokenizer, sampling)
        return sample_and_store(engine, rollout, sample_requests(tokenizer, shortfalls), label, seed, show_progress)
    finally:
        engine.dispose()


def missing_candidates(engine: Engine, campaign_name: str, label: str, k: int) -> list[tuple[int, Any, int]]:
    """(item id, prompt, how many candidates short of k) for each non-gold item lacking some."""
    with Session(engine) as session:
        campaign_id = session.scalar(select(Campaign.id).where(Campaign.name == campaign_name))
        if campaign_id is None:
            raise CampaignNotFoundError(f"no campaign named {campaign_name!r} in {engine.url!r}")
        have = (
            select(Candidate.item_id, func.count().label("n"))
            .where(Candidate.model == label)
            .group_by(Candidate.item_id)
            .subquery()
        )
        rows = session.execute(
            select(Item.id, Item.prompt, func.coalesce(have.c.n, 0))
            .outerjoin(have, have.c.item_id == Item.id)
            .where(Item.campaign_id == campaign_id, Item.is_gold.is_(False))
            .order_by(Item.id)
        ).all()
    return [(item_id, prompt, k - count) for item_id, prompt, count in rows if count < k]


def load_generator(model_name: str, adapter: str | None, dtype: str):
    """The model (with the LoRA adapter applied, if given) and its tokenizer."""
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name=model_name, dtype=dtype))
    if adapter is not None:
        model = load_saved_adapter(model, adapter)
    return model, tokenizer


def sample_requests(tokenizer, shortfalls: list[tuple[int, Any, int]]) -> list[SampleRequest]:
    """One request per missing response; the prompt goes through the model's chat template."""
    requests = []
    for item_id, prompt, missing in shortfalls:
        prompt_ids = encode_prompt(tokenizer, PromptOnly.model_validate({"prompt": prompt}).prompt)
        requests += [SampleRequest(item_id, prompt_ids)] * missing
    return requests


def sample_and_store(
    engine: Engine,
    rollout: HFRolloutEngine,
    requests: list[SampleRequest],
    label: str,
    seed: int,
    show_progress: bool,
) -> int:
    batch_size = rollout.sampling.batch_size
    batches = [requests[start : start + batch_size] for start in range(0, len(requests), batch_size)]
    settings = rollout.sampling.model_dump(include=set(RECORDED_SAMPLING_FIELDS))
    with TrainingProgress(len(batches), 0, show_progress, description="generating candidates") as progress:
        for index, batch in enumerate(batches):
            generated = rollout.generate([request.prompt_ids for request in batch], seed=seed + index)
            with Session(engine) as session, session.begin():
                session.add_all(
                    Candidate(
                        item_id=request.item_id,
                        text=text,
                        model=label,
                        meta={"sampling": settings, "seed": seed + index, "finished": finished},
                    )
                    for request, text, finished in zip(batch, generated.texts, generated.finished)
                )
            progress.advance({})
    return len(requests)
