"""The admin dashboard at 30,000 judgements on SQLite: how long it takes to load, and how long a
writer waits meanwhile, with the quality report computed inside a write transaction (as before)
and in a read-only one (as now), side by side in one run.

    python benchmarks/feedback_dashboard.py                 # 30,000 judgements, 3 repeats
    python benchmarks/feedback_dashboard.py --judgements 5000 --repeats 1

Each repeat starts one dashboard computation in a thread and, 0.1 s later, one small write (an
evaluator acknowledging guidelines, one short transaction), and times that write. The dashboard
page itself is then loaded over HTTP from a real server, first (the report is computed) and
again (the cached report is reused until a judgement or an item arrives). Medians are printed
and written to benchmarks/results/<cpu>/feedback_dashboard.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests" / "feedback")]

from alignloop.feedback import quality, service  # noqa: E402
from alignloop.feedback.database import make_engine, make_read_session_factory, make_session_factory, transaction, upgrade  # noqa: E402
from alignloop.feedback.models import Assignment, AssignmentStatus, Candidate, Item, Judgement, TaskType  # noqa: E402
from roofline import cpu_model, results_dir  # noqa: E402

PASSWORD = "dashboard-bench"


def populate(url: str, judgements: int, evaluators: int = 30, overlap: int = 3) -> int:
    """A pairwise campaign with `judgements` answers by `evaluators` people; its id."""
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    rng = random.Random(0)
    with transaction(factory) as session:
        service.create_user(session, "admin", PASSWORD, "admin")
        users = [service.create_user(session, f"e{index}", PASSWORD) for index in range(evaluators)]
        campaign = service.create_campaign(session, "big", ["pairwise"], overlap=overlap)
        items = []
        for index in range(judgements // overlap + 1):
            item = Item(campaign_id=campaign.id, prompt=f"prompt {index}",
                        candidates=[Candidate(text=f"a{index}", meta={}), Candidate(text=f"b{index}", meta={})])
            items.append(item)
        session.add_all(items)
        session.flush()
        pairs = [(item, user) for item in items for user in rng.sample(users, overlap)][:judgements]
        assignments = [Assignment(campaign_id=campaign.id, item_id=item.id, evaluator_id=user.id, task_type=TaskType.pairwise,
                                  shown_order=[c.id for c in item.candidates], status=AssignmentStatus.done)
                       for item, user in pairs]
        session.add_all(assignments)
        session.flush()  # one flush for all: ids for the judgements below
        for assignment in assignments:
            choice = rng.choice("ab")
            session.add(Judgement(assignment_id=assignment.id, campaign_id=campaign.id, item_id=assignment.item_id,
                                  evaluator_id=assignment.evaluator_id, task_type=TaskType.pairwise,
                                  shown_order=assignment.shown_order, duration_ms=rng.randint(2000, 20000),
                                  answer={"choice": choice, "better": assignment.shown_order["ab".index(choice)],
                                          "strength": None}))
        return campaign.id


def writer_wait(url: str, campaign_id: int, report_in_write_transaction: bool) -> tuple[float, float]:
    """(seconds the report took, seconds one small write took while it ran)."""
    engine = make_engine(url)
    read, write = make_read_session_factory(engine), make_session_factory(engine)
    timings: dict[str, float] = {}

    def dashboard() -> None:
        start = time.perf_counter()
        with transaction(write if report_in_write_transaction else read) as session:
            quality.campaign_report(session, campaign_id)
        timings["report"] = time.perf_counter() - start

    thread = threading.Thread(target=dashboard)
    thread.start()
    time.sleep(0.1)
    start = time.perf_counter()
    with transaction(write) as session:
        service.acknowledge_guidelines(session, service.user_by_name(session, f"e{random.randrange(30)}"), campaign_id)
    timings["write"] = time.perf_counter() - start
    thread.join()
    engine.dispose()
    return timings["report"], timings["write"]


def page_loads(url: str, campaign_id: int) -> tuple[float, float]:
    """(first load, second load) of the dashboard page over HTTP, in seconds."""
    from live_server import serving
    from web_client import sign_in

    with serving(url) as base:
        client = httpx.Client(base_url=base, timeout=120)
        assert sign_in(client, "admin", PASSWORD).status_code == 303
        loads = []
        for _ in range(2):
            start = time.perf_counter()
            assert client.get(f"/admin/campaigns/{campaign_id}").status_code == 200
            loads.append(time.perf_counter() - start)
    return loads[0], loads[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgements", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/dashboard.db"
        start = time.perf_counter()
        campaign_id = populate(url, args.judgements)
        print(f"{args.judgements} judgements stored in {time.perf_counter() - start:.1f} s")
        rows = {"write transaction (before)": [], "read-only transaction (now)": []}
        for _ in range(args.repeats):
            rows["write transaction (before)"].append(writer_wait(url, campaign_id, True))
            rows["read-only transaction (now)"].append(writer_wait(url, campaign_id, False))
        first, cached = page_loads(url, campaign_id)
    result = {"cpu": cpu_model(), "judgements": args.judgements, "repeats": args.repeats,
              "page_first_load_s": round(first, 3), "page_cached_load_s": round(cached, 3)}
    print(f"CPU: {result['cpu']}")
    for name, timings in rows.items():
        report = statistics.median(t[0] for t in timings)
        write = statistics.median(t[1] for t in timings)
        result[name] = {"report_s": round(report, 3), "writer_wait_s": round(write, 4)}
        print(f"report in a {name}: report {report:.2f} s, a concurrent write took {write * 1000:.0f} ms (medians)")
    print(f"dashboard page over HTTP: first load {first:.2f} s, cached {cached:.3f} s")
    out = args.out or results_dir() / "feedback_dashboard.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
