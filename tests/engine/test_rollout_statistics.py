"""A step's statistics that do not add up across processes (`reward_std`, `response/distinct_2`,
`value/explained_variance`) are computed once over the rollout gathered from every process: a
real 2-process gloo run gives what one process gives on the same rollout."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alignloop.algorithms.online import rollout_statistics
from alignloop.algorithms.ppo import explained_variance
from alignloop.engine.trainer import gather_rollout
from alignloop.evaluation.diversity import ngram_codes

# An uneven split, as processes hold responses of different lengths: rank 0 gets the first part.
SCORES = torch.tensor([0.1, 2.0, -1.0, 0.5, 3.0, -2.5, 1.5])  # (R,) one per response
VALUES = torch.linspace(-1.0, 2.0, 11)  # (N,) the value of each response token
RETURNS = VALUES ** 2 - 0.3  # (N,)
# Bigrams: (the cat) (cat sat) | (the cat) (cat ran) | (I am) (am sorry) | (I am) (am sorry)
# (sorry again): 9 in all, 6 distinct. Rank 0 holds the first 4, rank 1 the other 5.
REPLIES = ["the cat sat", "the cat ran", "I am sorry", "I am sorry again"]
BIGRAMS = torch.tensor(ngram_codes(REPLIES, 2), dtype=torch.int64)
SPLIT = {"scores": 3, "values": 4, "returns": 4, "bigrams": 4}  # rank 0's share of each


def step_statistics(rollout: dict[str, torch.Tensor]) -> dict[str, float]:
    """What a PPO step records from its gathered rollout (`PPO.rollout_statistics`)."""
    return {**rollout_statistics(rollout),
            "value/explained_variance": explained_variance(rollout["values"], rollout["returns"])}


def full_rollout() -> dict[str, torch.Tensor]:
    return {"scores": SCORES, "values": VALUES, "returns": RETURNS, "bigrams": BIGRAMS}


def share(rank: int) -> dict[str, torch.Tensor]:
    return {name: values[: SPLIT[name]] if rank == 0 else values[SPLIT[name]:] for name, values in full_rollout().items()}


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        stats = step_statistics(gather_rollout(share(rank)))
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(stats, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_record_what_one_process_records(tmp_path):
    # fork: the children start with this process's imports (seconds saved); they only gather.
    context = mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=False,
                                 start_method="fork")
    deadline = time.monotonic() + 60
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process gather did not finish in 60 s")
    one_process = step_statistics(full_rollout())
    for rank in (0, 1):
        two_processes = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert two_processes == pytest.approx(one_process, abs=1e-12)


def test_distinct_2_counts_the_bigrams_of_every_process_once():
    assert rollout_statistics(full_rollout())["response/distinct_2"] == pytest.approx(6 / 9, abs=1e-12)
    # Each process alone counts only its own share: 3 of 4 distinct, and 3 of 5.
    assert rollout_statistics(share(0))["response/distinct_2"] == pytest.approx(3 / 4, abs=1e-12)
    assert rollout_statistics(share(1))["response/distinct_2"] == pytest.approx(3 / 5, abs=1e-12)


def test_the_old_size_weighted_std_of_each_process_was_not_the_std():
    # What rollout_metrics reported before: each process's std times its count, summed, / total.
    parts = [share(0)["scores"], share(1)["scores"]]
    weighted = sum(float(p.double().std(unbiased=False)) * len(p) for p in parts) / len(SCORES)
    assert weighted != pytest.approx(rollout_statistics(full_rollout())["reward_std"], abs=1e-3)


def test_one_process_gathers_nothing():
    rollout = full_rollout()
    assert gather_rollout(rollout) is rollout
