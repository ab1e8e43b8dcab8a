"""The candidate-generation job, with the tiny random model on real SQLite (and once PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from alignloop.engine.rollout import HFRolloutEngine, SamplingConfig
from alignloop.loop import generate as generate_module
from alignloop.feedback.database import upgrade
from alignloop.loop.generate import CampaignNotFoundError, generate_candidates, model_label
from alignloop.feedback.models import Campaign, Candidate, Item

SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=6, batch_size=3)


def make_campaign(db_url: str) -> str:
    """A campaign "c1" with a text prompt, a chat prompt, an item that already has an imported
    candidate, and a gold item."""
    upgrade(db_url)
    engine = create_engine(db_url)
    with Session(engine) as session, session.begin():
        campaign = Campaign(name="c1", task_types=["pairwise"])
        campaign.items = [
            Item(prompt="Say hi."),
            Item(prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]),
            Item(prompt="<script>alert(1)</script>", candidates=[Candidate(text="imported answer")]),
            Item(prompt="Gold prompt", is_gold=True, candidates=[Candidate(text="good"), Candidate(text="bad")]),
        ]
        session.add(campaign)
    engine.dispose()
    return db_url


@pytest.fixture
def campaign_db(sqlite_url):
    return make_campaign(sqlite_url)


def candidate_counts(db_url: str) -> dict[tuple[str, str], int]:
    """{(item prompt as text, model): number of candidates}."""
    engine = create_engine(db_url)
    with Session(engine) as session:
        rows = session.execute(
            select(Item.prompt, Candidate.model, func.count())
            .join(Candidate, Candidate.item_id == Item.id)
            .group_by(Item.id, Candidate.model)
        ).all()
    engine.dispose()
    return {(str(prompt), model): count for prompt, model, count in rows}


def generate(db_url: str, model_dir, k: int) -> int:
    return generate_candidates(db_url, "c1", str(model_dir), k, SAMPLING, show_progress=False)


def test_fills_every_item_to_k_and_records_the_model(campaign_db, tiny_model_dir):
    stored = generate(campaign_db, tiny_model_dir, k=2)

    assert stored == 6  # 3 non-gold items x 2
    counts = candidate_counts(campaign_db)
    model = str(tiny_model_dir)
    chat_prompt = str([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}])
    assert counts == {
        ("Say hi.", model): 2,
        (chat_prompt, model): 2,
        ("<script>alert(1)</script>", model): 2,
        ("<script>alert(1)</script>", ""): 1,  # the imported candidate is kept and does not count
        ("Gold prompt", ""): 2,  # gold items keep their curated candidates only
    }
    engine = create_engine(campaign_db)
    with Session(engine) as session:
        metas = session.scalars(select(Candidate.meta).where(Candidate.model == model)).all()
    engine.dispose()
    assert {meta["seed"] for meta in metas} == {0, 1}  # two batches of three
    assert all(
        meta["sampling"] == {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 6, "min_new_tokens": 0}
        and isinstance(meta["finished"], bool)
        for meta in metas
    )


def test_rerun_adds_nothing_and_raising_k_tops_up(campaign_db, tiny_model_dir):
    assert generate(campaign_db, tiny_model_dir, k=2) == 6
    before = candidate_counts(campaign_db)

    assert generate(campaign_db, tiny_model_dir, k=2) == 0
    assert candidate_counts(campaign_db) == before

    assert generate(campaign_db, tiny_model_dir, k=3) == 3  # one more per non-gold item
    assert sum(candidate_counts(campaign_db).values()) == sum(before.values()) + 3


def test_nothing_missing_loads_no_model(campaign_db, tiny_model_dir, monkeypatch):
    generate(campaign_db, tiny_model_dir, k=1)

    def no_loading(*args):
        raise AssertionError("the model was loaded although no candidate was missing")

    monkeypatch.setattr(generate_module, "load_generator", no_loading)
    assert generate(campaign_db, tiny_model_dir, k=1) == 0


def test_interrupted_run_keeps_finished_batches_and_resumes(campaign_db, tiny_model_dir, monkeypatch):
    real_generate = HFRolloutEngine.generate
    calls = []

    def fail_on_second_batch(self, prompt_ids, *, seed=None):
        calls.append(seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_generate(self, prompt_ids, seed=seed)

    monkeypatch.setattr(HFRolloutEngine, "generate", fail_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        generate(campaign_db, tiny_model_dir, k=2)
    assert sum(n for (_, model), n in candidate_counts(campaign_db).items() if model) == 3  # the first batch

    monkeypatch.setattr(HFRolloutEngine, "generate", real_generate)
    assert generate(campaign_db, tiny_model_dir, k=2) == 3
    assert sum(n for (_, model), n in candidate_counts(campaign_db).items() if model) == 6


def test_works_on_postgres(postgres_url, tiny_model_dir):
    make_campaign(postgres_url)
    assert generate(postgres_url, tiny_model_dir, k=1) == 3
    assert generate(postgres_url, tiny_model_dir, k=1) == 0
    assert sum(n for (_, model), n in candidate_counts(postgres_url).items() if model == str(tiny_model_dir)) == 3


def test_unknown_campaign_is_named(campaign_db):
    with pytest.raises(CampaignNotFoundError, match="no campaign named 'nope'"):
        generate_candidates(campaign_db, "nope", "unused", 2, SAMPLING, show_progress=False)


def test_bad_arguments_are_refused(campaign_db):
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        generate_candidates(campaign_db, "c1", "unused", 0, SAMPLING, show_progress=False)
    with pytest.raises(ValueError, match="sampling.engine='vllm' is not supported"):
        generate_candidates(campaign_db, "c1", "unused", 2, SamplingConfig(engine="vllm"), show_progress=False)


def test_adapter_is_applied_and_recorded(campaign_db, tiny_model_dir, tmp_path):
    import torch

    from alignloop.models import LoraSettings, apply_lora, load_model_and_tokenizer, save_adapter

    base, _ = load_model_and_tokenizer(str(tiny_model_dir))
    adapted = apply_lora(base, LoraSettings(r=4))
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA starts as a no-op (B = 0); make it change the model
        for name, weight in adapted.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=1.0)
    adapter = str(save_adapter(adapted, tmp_path / "adapter"))
    greedy = SamplingConfig(temperature=0, max_new_tokens=6, batch_size=3)

    assert generate_candidates(campaign_db, "c1", str(tiny_model_dir), 1, greedy, show_progress=False) == 3
    assert generate_candidates(campaign_db, "c1", str(tiny_model_dir), 1, greedy, adapter, show_progress=False) == 3

    engine = create_engine(campaign_db)
    with Session(engine) as session:
        texts = {
            label: session.scalars(select(Candidate.text).where(Candidate.model == label).order_by(Candidate.id)).all()
            for label in (str(tiny_model_dir), model_label(str(tiny_model_dir), adapter))
        }
    engine.dispose()
    assert model_label("base", adapter) == f"base+{adapter}"
    base_texts, adapter_texts = texts.values()
    assert len(base_texts) == len(adapter_texts) == 3
    assert base_texts != adapter_texts  # greedy decoding: only the adapter can make them differ
