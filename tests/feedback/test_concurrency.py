"""Many evaluators at once, over real HTTP, against a real server process (`python -m
alignloop.cli.feedback`), on SQLite and on PostgreSQL:

* 20 clients submit 50 judgements each: exactly 1,000 are stored, none twice, none lost, and
  every item ends with exactly `overlap` judgements.
* a server killed with SIGKILL in the middle of the load, then restarted, still holds every
  judgement it acknowledged (2xx); clients retrying their unacknowledged submissions with the
  same client_key afterwards store each one exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import select

from live_server import free_port, wait_until_healthy

from alignloop.feedback import security, service
from alignloop.feedback.database import make_engine, make_session_factory, transaction, upgrade
from alignloop.feedback.models import Candidate, GuidelineAck, Item, Judgement, Role, User

CLIENTS = 20
PER_CLIENT = 50


@contextmanager
def server_process(db_url: str, workers: int = 1) -> Iterator[tuple[str, subprocess.Popen]]:
    """The app in its own process, as an operator would run it; (base URL, process)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "alignloop.cli.feedback", "--db", db_url, "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_healthy(base, timeout=60, process=process)
    try:
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


def populate(db_url: str, evaluators: int, items: int, overlap: int) -> tuple[list[str], int]:
    """Evaluators who read the guidelines (tokens returned) and a pairwise campaign."""
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            campaign = service.create_campaign(session, "load", ["pairwise"], overlap=overlap)
            tokens = []
            for index in range(evaluators):
                # No password sign-in here: skip argon2 (140 ms a hash) and use API tokens.
                user = User(username=f"e{index}", role=Role.evaluator, password_hash="!", active=True)
                session.add(user)
                session.flush()
                session.add(GuidelineAck(user_id=user.id, campaign_id=campaign.id))
                tokens.append(security.issue_api_token(session, user, "load"))
            session.add_all(
                Item(campaign_id=campaign.id, prompt=f"prompt {i}", candidates=[Candidate(text=f"r{i}.{k}", meta={}) for k in range(2)])
                for i in range(items)
            )
            return tokens, campaign.id
    finally:
        engine.dispose()


def answer(client_key: str) -> dict:
    return {"answer": {"choice": "a", "strength": 1}, "client_key": client_key}


def submit_one(client: httpx.Client, campaign_id: int, client_key: str) -> dict | None:
    """Ask for the next task and answer it; the stored judgement, or None when nothing is left."""
    task = client.post(f"/api/v1/campaigns/{campaign_id}/next")
    if task.status_code == 204:
        return None
    task.raise_for_status()
    stored = client.post(f"/api/v1/assignments/{task.json()['assignment_id']}/judgement", json=answer(client_key))
    stored.raise_for_status()
    return stored.json()


def stored_judgements(db_url: str) -> list[tuple[int, int, int, str]]:
    engine = make_engine(db_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            rows = session.execute(select(Judgement.assignment_id, Judgement.item_id, Judgement.evaluator_id, Judgement.client_key))
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_20_clients_submitting_50_judgements_each_store_exactly_1000(db_url):
    # 50 items x overlap 20 = exactly 1,000 slots for 20 evaluators: everyone judges every item once.
    tokens, campaign_id = populate(db_url, CLIENTS, items=PER_CLIENT, overlap=CLIENTS)
    acknowledged: dict[int, list[dict]] = {}
    failures: list[BaseException] = []

    def evaluator(index: int) -> None:
        try:
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens[index]}"}, timeout=60) as client:
                acknowledged[index] = [submit_one(client, campaign_id, f"c{index}-{n}") for n in range(PER_CLIENT)]
        except BaseException as error:  # reported below; a thread's exception would vanish otherwise
            failures.append(error)

    with server_process(db_url) as (base, _):
        threads = [threading.Thread(target=evaluator, args=(index,)) for index in range(CLIENTS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    assert failures == []
    backend = db_url.split(":")[0]
    print(f"\n{backend}: {CLIENTS * PER_CLIENT} judgements in {elapsed:.2f} s = {CLIENTS * PER_CLIENT / elapsed:.0f} judgements/s "
          f"({CLIENTS} clients, 2 requests each)")

    rows = stored_judgements(db_url)
    assert len(rows) == CLIENTS * PER_CLIENT
    assert len({assignment for assignment, *_ in rows}) == len(rows)  # one judgement per assignment
    assert len({(item, evaluator) for _, item, evaluator, _ in rows}) == len(rows)  # nobody judged an item twice
    per_item: dict[int, int] = {}
    for _, item, _, _ in rows:
        per_item[item] = per_item.get(item, 0) + 1
    assert sorted(set(per_item.values())) == [CLIENTS] and len(per_item) == PER_CLIENT
    acked_keys = {judgement["client_key"] for answers in acknowledged.values() for judgement in answers}
    assert acked_keys == {key for *_, key in rows}  # every acknowledged one is stored, nothing else is


def test_several_worker_processes_share_one_database(sqlite_url):
    # 4 clients x 10 judgements through 2 uvicorn worker processes: 40 stored, none twice.
    tokens, campaign_id = populate(sqlite_url, 4, items=10, overlap=4)

    def evaluator(index: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens[index]}"}, timeout=60) as client:
            for n in range(10):
                submit_one(client, campaign_id, f"c{index}-{n}")

    with server_process(sqlite_url, workers=2) as (base, _):
        threads = [threading.Thread(target=evaluator, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    rows = stored_judgements(sqlite_url)
    assert len(rows) == 40 == len({(item, evaluator) for _, item, evaluator, _ in rows})


@pytest.mark.slow
def test_a_killed_server_loses_nothing_it_acknowledged(db_url):
    clients = 8
    tokens, campaign_id = populate(db_url, clients, items=200, overlap=clients)
    acked: set[str] = set()
    unacked: dict[int, tuple[int, str]] = {}  # client -> (assignment, key) of a submission that got no reply
    lock = threading.Lock()

    def evaluator(index: int, base: str) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens[index]}"}, timeout=30) as client:
            for n in range(10_000):
                try:
                    task = client.post(f"/api/v1/campaigns/{campaign_id}/next")
                    task.raise_for_status()
                except (httpx.TransportError, httpx.HTTPStatusError):
                    return  # cut off before holding a task: nothing to retry
                assignment, key = task.json()["assignment_id"], f"c{index}-{n}"
                try:
                    stored = client.post(f"/api/v1/assignments/{assignment}/judgement", json=answer(key))
                    stored.raise_for_status()
                except (httpx.TransportError, httpx.HTTPStatusError):
                    unacked[index] = (assignment, key)  # the server died under us: stored or not, we cannot tell
                    return
                with lock:
                    acked.add(stored.json()["client_key"])

    with server_process(db_url) as (base, process):
        threads = [threading.Thread(target=evaluator, args=(index, base)) for index in range(clients)]
        for thread in threads:
            thread.start()
        while len(acked) < 150:
            assert process.poll() is None
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        for thread in threads:
            thread.join(timeout=30)

    stored_after_kill = {key for *_, key in stored_judgements(db_url)}
    assert acked <= stored_after_kill, f"lost {len(acked - stored_after_kill)} acknowledged judgements"

    with server_process(db_url) as (base, _):
        # Each cut-off client retries its submission with the same client_key: stored once (201),
        # or handed back (200) when it had been stored before the kill.
        for index, (assignment, key) in unacked.items():
            retry = httpx.post(f"{base}/api/v1/assignments/{assignment}/judgement", json=answer(key),
                               headers={"Authorization": f"Bearer {tokens[index]}"})
            assert retry.status_code in (200, 201) and retry.json()["client_key"] == key
    rows = stored_judgements(db_url)
    keys = [key for *_, key in rows]
    assert len(keys) == len(set(keys)) == len({assignment for assignment, *_ in rows})
    assert acked | {key for _, key in unacked.values()} <= set(keys)
    print(f"\n{db_url.split(':')[0]}: {len(acked)} acknowledged before SIGKILL, all present after restart")
