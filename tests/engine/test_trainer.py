"""The generic loop on a toy regression model: accumulation, exact resume, NaN stop, sinks."""

from __future__ import annotations

import json

import pytest
import torch

from alignloop.engine import LossOutput, NonFiniteLossError, ResumeError, TrainConfig, Trainer, TrainingMethod, read_metrics
from alignloop.engine.trainer import epoch_order, micro_batch_indices


class Regressor(torch.nn.Module):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(4, 8)
        self.dropout = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.out(self.dropout(torch.tanh(self.hidden(x)))).squeeze(-1)


class SquaredError(TrainingMethod):
    """Sum of squared errors; can be told to crash or go NaN at a given call, like a bad step."""

    def __init__(self, crash_at_call: int | None = None, nan_at_call: int | None = None):
        self.calls = 0
        self.crash_at_call = crash_at_call
        self.nan_at_call = nan_at_call

    def count_items(self, batch):
        return len(batch["y"])

    def loss(self, model, batch):
        self.calls += 1
        if self.calls == self.crash_at_call:
            raise KeyboardInterrupt("simulated interruption")
        error = (model(batch["x"]) - batch["y"]) ** 2
        if self.calls == self.nan_at_call:
            error = error * float("nan")
        return LossOutput(error.sum(), {"train/abs_error": error.sqrt().sum().detach()})


def examples(n: int = 24):
    generator = torch.Generator().manual_seed(1)
    xs = torch.randn(n, 4, generator=generator)
    ys = xs.sum(-1) + 0.1 * torch.randn(n, generator=generator)
    return [{"x": x, "y": y} for x, y in zip(xs, ys)]


def collate(items):
    return {"x": torch.stack([i["x"] for i in items]), "y": torch.stack([i["y"] for i in items])}


def config(tmp_path, **overrides) -> TrainConfig:
    # float32 on every CPU: these tests compare runs to each other at 1e-6.
    values = dict(output_dir=str(tmp_path), max_steps=6, batch_size=4, lr=0.05, progress=False, warmup_steps=1,
                  mixed_precision="no")
    values.update(overrides)
    return TrainConfig(**values)


def run(cfg, model=None, method=None, resume=False):
    model = model or Regressor()
    trainer = Trainer(cfg, model, method or SquaredError(), examples(), collate)
    trainer.train(resume=resume)
    return model, [r["train/loss"] for r in read_metrics(cfg_path(cfg))]


def cfg_path(cfg):
    from pathlib import Path

    return Path(cfg.output_dir) / "metrics.jsonl"


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    assert epoch_order(10, 3, 1) == epoch_order(10, 3, 1)
    assert epoch_order(10, 3, 1) != epoch_order(10, 3, 2)
    assert sorted(epoch_order(10, 3, 1)) == list(range(10))


def test_two_processes_split_the_global_batch_of_one():
    order = list(range(20))
    single = micro_batch_indices(order, 1, batch_size=4, world=1, accum=1, rank=0)
    rank0 = micro_batch_indices(order, 1, batch_size=2, world=2, accum=1, rank=0)
    rank1 = micro_batch_indices(order, 1, batch_size=2, world=2, accum=1, rank=1)
    assert single == [[4, 5, 6, 7]]
    assert rank0[0] + rank1[0] == single[0]


def test_last_batch_of_an_epoch_wraps_around():
    assert micro_batch_indices(list(range(10)), 2, batch_size=4, world=1, accum=1, rank=0) == [[8, 9, 0, 1]]


def test_accumulation_gives_the_same_update_as_a_larger_batch(tmp_path):
    big, big_losses = run(config(tmp_path / "a", batch_size=4, grad_accum=1))
    small, small_losses = run(config(tmp_path / "b", batch_size=2, grad_accum=2))
    assert small_losses == pytest.approx(big_losses, abs=1e-6)
    for p, q in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


def test_interrupted_run_resumes_with_identical_losses(tmp_path):
    # Dropout makes the losses depend on the RNG stream, so this also proves RNG restore.
    _, straight = run(config(tmp_path / "straight"), model=Regressor(dropout=0.3))
    cfg = config(tmp_path / "interrupted", save_every=3)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, model=Regressor(dropout=0.3), method=SquaredError(crash_at_call=5))
    _, resumed = run(cfg, model=Regressor(dropout=0.3), resume=True)
    assert len(resumed) == 6
    assert resumed == pytest.approx(straight, abs=1e-6)


def test_fresh_run_refuses_to_overwrite_checkpoints(tmp_path):
    cfg = config(tmp_path, save_every=3)
    run(cfg)
    with pytest.raises(ResumeError, match="--resume"):
        run(cfg)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ResumeError, match="nothing to resume"):
        run(config(tmp_path), resume=True)


def test_nan_loss_stops_before_the_update_and_names_the_last_checkpoint(tmp_path):
    cfg = config(tmp_path, save_every=2)
    model = Regressor()
    with pytest.raises(NonFiniteLossError, match=r"step 3: non-finite loss.*step-00000002"):
        run(cfg, model=model, method=SquaredError(nan_at_call=3))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [r["step"] for r in read_metrics(cfg_path(cfg))] == [1, 2]


def test_run_directory_records_config_versions_data_and_sinks(tmp_path):
    cfg = config(tmp_path, report_to=["jsonl", "tensorboard"])
    trainer = Trainer(cfg, Regressor(), SquaredError(), examples(), collate, config_yaml="train: {}\n", data_info={"sha256": "abc"})
    trainer.train()
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["data"] == {"sha256": "abc"} and "torch" in info["versions"]
    assert (tmp_path / "config.yaml").read_text() == "train: {}\n"
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["train/lr"] == pytest.approx(0.0)  # warmup starts at zero
    assert records[-1]["train/abs_error"] > 0
    # TensorBoard through accelerate's tracker: the same scalars, read back by tensorboard itself
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert logged == [(r["step"], pytest.approx(r["train/loss"], rel=1e-6)) for r in records]


def test_trackers_group_training_side_metrics_under_train_as_the_hf_trainer_does(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from alignloop.engine.metrics import MetricsLogger

    logger = MetricsLogger(tmp_path, ["jsonl", "tensorboard"], {}, resume=False)
    logger.log(1, {"train/loss": 0.5, "rewards/accuracies": 0.75, "eval/rewards/accuracies": 0.625})
    logger.close()
    tags = set(EventAccumulator(str(tmp_path / "tensorboard")).Reload().Tags()["scalars"])
    assert tags == {"train/loss", "train/rewards/accuracies", "eval/rewards/accuracies"}
    record = read_metrics(tmp_path / "metrics.jsonl")[0]  # the jsonl keeps the names as logged
    assert record["rewards/accuracies"] == 0.75 and "train/rewards/accuracies" not in record


def test_a_tracker_that_is_not_installed_is_one_line_before_anything_runs(tmp_path):
    import importlib.util

    from alignloop.config import ConfigError, load_config

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    with pytest.raises(ConfigError, match=r"^overrides: key 'report_to': Value error, 'mlflow' is not installed: "
                                          r"pip install mlflow"):
        load_config(TrainConfig, None, ["report_to=[jsonl,mlflow]"])
    with pytest.raises(ConfigError, match="unknown metric sink 'tensorbord'; known: jsonl, tensorboard, wandb"):
        load_config(TrainConfig, None, ["report_to=[tensorbord]"])


def test_loss_decreases_on_a_learnable_problem(tmp_path):
    _, losses = run(config(tmp_path, max_steps=30, lr=0.05))
    assert losses[-1] < 0.5 * losses[0]
