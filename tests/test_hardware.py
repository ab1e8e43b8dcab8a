"""Precision and attention kernel chosen from the hardware: the decisions as pure functions of
given measurements and flags, the real probe on this machine, its cache, and what a training
run with `mixed_precision: auto` does and records."""

from __future__ import annotations

import json

import pytest
import torch

from alignloop import hardware
from alignloop.engine import LossOutput, TrainConfig, Trainer, TrainingMethod
from alignloop.hardware import CpuInfo, MatmulProbe

EPYC = CpuInfo("AMD EPYC", frozenset({"avx", "avx2", "fma"}), 2)
XEON_AMX = CpuInfo("Intel(R) Xeon(R) Platinum 8481C", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}), 2)
UNKNOWN = CpuInfo("arm64", None, 8)


def probe(float32_ms: float, bfloat16_ms: float) -> MatmulProbe:
    return MatmulProbe(128, 576, float32_ms / 1e3, bfloat16_ms / 1e3)


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 i8mm
CPU implementer\t: 0x41
"""


def test_cpuinfo_gives_the_model_and_the_flags_of_x86_and_arm():
    assert hardware.parse_cpuinfo(X86_CPUINFO) == ("AMD EPYC", frozenset({"fpu", "sse2", "avx", "avx2", "fma"}))
    model, flags = hardware.parse_cpuinfo(ARM_CPUINFO)
    assert model == "" and "bf16" in flags and "asimd" in flags


def test_cpu_properties_name_the_instruction_set_and_native_bf16():
    assert (EPYC.isa, EPYC.native_bf16, EPYC.reported_flags) == ("avx2", False, ["avx2"])
    assert (XEON_AMX.isa, XEON_AMX.native_bf16) == ("amx", True)
    assert XEON_AMX.reported_flags == ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    assert UNKNOWN.native_bf16 is None
    assert EPYC.slug == "amd-epyc-avx2" and XEON_AMX.slug == "intel-r-xeon-r-platinum-8481c-amx"
    zen4 = CpuInfo("AMD EPYC", frozenset({"avx2", "avx512f", "avx512_bf16"}), 2)
    assert zen4.slug == "amd-epyc-avx512-bf16" != EPYC.slug  # one model name, two CPUs: two probe caches


def test_an_avx2_cpu_that_runs_bf16_40x_slower_trains_in_float32_and_says_why():
    choice = hardware.choose_cpu_precision(probe(1.0, 40.0), EPYC)
    assert choice.precision == "no" and choice.dtype == torch.float32
    assert choice.bf16_speedup == pytest.approx(1 / 40)
    assert choice.reason == ("float32: this CPU (AMD EPYC, avx2) has no bf16 instructions and runs bf16 products "
                             "40x slower than float32")


def test_an_amx_cpu_that_runs_bf16_6x_faster_trains_in_bf16():
    choice = hardware.choose_cpu_precision(probe(6.0, 1.0), XEON_AMX)
    assert choice.precision == "bf16" and choice.dtype == torch.bfloat16
    assert choice.reason == "bf16 autocast: this CPU (Intel(R) Xeon(R) Platinum 8481C, amx) runs bf16 products 6.0x faster than float32"


@pytest.mark.parametrize("cpu, float32_ms, bfloat16_ms, expected", [
    (XEON_AMX, 1.1, 1.0, "no"),  # 1.1x: not worth bf16's rounding (BF16_MIN_SPEEDUP 1.2)
    (XEON_AMX, 1.2, 1.0, "bf16"),  # exactly the margin
    (XEON_AMX, 1.0, 2.0, "no"),  # the flags say bf16 but the kernels do not use them
    (EPYC, 3.0, 1.0, "no"),  # no bf16 instructions: a faster bf16 time is noise, not hardware
    (UNKNOWN, 3.0, 1.0, "bf16"),  # no flags to read: the measurement decides
    (UNKNOWN, 1.0, 3.0, "no"),
])
def test_bf16_needs_both_the_measurement_and_the_flags(cpu, float32_ms, bfloat16_ms, expected):
    assert hardware.choose_cpu_precision(probe(float32_ms, bfloat16_ms), cpu).precision == expected


@pytest.mark.parametrize("capability, expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((6, 1), "no")])
def test_cuda_precision_follows_the_compute_capability(capability, expected):
    choice = hardware.choose_cuda_precision(capability, "GPU")
    assert choice.precision == expected
    assert f"compute capability {capability[0]}.{capability[1]}" in choice.reason


def test_matmul_attention_crossover_is_the_last_length_it_won_at_without_a_loss_before():
    assert hardware.matmul_attention_max_keys_from({64: (1, 2), 128: (2, 3), 192: (4, 3), 256: (5, 3)}) == 128
    assert hardware.matmul_attention_max_keys_from({64: (1, 2), 128: (3, 2), 192: (1, 3)}) == 64  # a win after a loss does not count
    assert hardware.matmul_attention_max_keys_from({64: (2, 1)}) == 0  # never: SDPA everywhere
    assert hardware.matmul_attention_max_keys_from({128: (1, 2), 64: (1, 2)}) == 128  # order of the dict is irrelevant


def test_the_real_probe_chooses_the_faster_of_the_two_precisions_it_measured():
    measured = hardware.probe_matmul()
    cpu = hardware.cpu_info()
    choice = hardware.choose_cpu_precision(measured, cpu)
    assert measured.float32_s > 0 and measured.bfloat16_s > 0
    if choice.precision == "bf16":
        assert measured.bfloat16_s * hardware.BF16_MIN_SPEEDUP <= measured.float32_s
    else:  # float32: bf16 was not clearly faster, or this CPU has no bf16 instructions
        assert measured.bfloat16_s * hardware.BF16_MIN_SPEEDUP > measured.float32_s or cpu.native_bf16 is False
    assert choice.reason.startswith("bf16 autocast: " if choice.precision == "bf16" else "float32: ")
    assert cpu.model in choice.reason


@pytest.fixture
def fresh_probe_cache(tmp_path, monkeypatch):
    """An empty ALIGNLOOP_HOME and no probe remembered by this process."""
    monkeypatch.setenv("ALIGNLOOP_HOME", str(tmp_path))
    monkeypatch.delenv(hardware.CPU_PRECISION_ENV)  # set for the whole suite by conftest.py
    for cached in (hardware.cpu_matmul_probe, hardware.auto_precision, hardware.matmul_attention_max_keys):
        cached.cache_clear()
    yield tmp_path
    for cached in (hardware.cpu_matmul_probe, hardware.auto_precision, hardware.matmul_attention_max_keys):
        cached.cache_clear()


def cache_file(home):
    files = list((home / "hardware").glob("*.json"))
    assert len(files) == 1, files
    return files[0]


def test_the_probe_is_cached_per_machine_and_torch_version(fresh_probe_cache, monkeypatch):
    first = hardware.cpu_matmul_probe()
    path = cache_file(fresh_probe_cache)
    assert hardware.cpu_info().slug in path.name and torch.__version__.split("+")[0] in path.name
    stored = json.loads(path.read_text())
    assert stored["cpu_model"] == hardware.cpu_info().model and stored["torch"] == torch.__version__
    assert stored["matmul_128x576"]["float32_s"] == first.float32_s
    # A later process reads the file instead of measuring: a probe that would fail proves it.
    hardware.cpu_matmul_probe.cache_clear()
    monkeypatch.setattr(hardware, "probe_matmul", lambda *a, **k: pytest.fail("probed again"))
    assert hardware.cpu_matmul_probe() == first
    # The same CPU with oneDNN capped to AVX2 (bf16 emulated: its speed is another machine's)
    # probes anew into a file of its own.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware.kernel_tag().endswith("-onednn-avx2") and hardware._cache_path(hardware.cpu_info()) != path


def test_a_cache_written_for_another_cpu_is_not_used(fresh_probe_cache, monkeypatch):
    hardware.cpu_matmul_probe()
    path = cache_file(fresh_probe_cache)
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "cpu_model": "another CPU", "matmul_128x576": {"rows": 128, "width": 576,
                                                                                       "float32_s": 9.0, "bfloat16_s": 9.0}}))
    hardware.cpu_matmul_probe.cache_clear()
    assert hardware.cpu_matmul_probe().float32_s != 9.0


def write_probe(home, float32_ms, bfloat16_ms):
    """This machine's cache file, saying what the test wants the probe to have measured."""
    cpu = hardware.cpu_info()
    entry = {"rows": 128, "width": 576, "float32_s": float32_ms / 1e3, "bfloat16_s": bfloat16_ms / 1e3}
    (home / "hardware").mkdir(parents=True, exist_ok=True)
    hardware._cache_path(cpu).write_text(json.dumps({"cpu_model": cpu.model, "torch": torch.__version__,
                                                     "matmul_128x576": entry}))


class RecordsAutocast(TrainingMethod):
    """A squared-error method that notes, at every loss, whether CPU autocast was on."""

    def __init__(self):
        self.autocast: list[tuple[bool, torch.dtype]] = []

    def count_items(self, batch):
        return len(batch["y"])

    def loss(self, model, batch):
        self.autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return LossOutput(((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).sum())


def train_toy(tmp_path, mixed_precision):
    generator = torch.Generator().manual_seed(0)
    data = [{"x": torch.randn(4, generator=generator), "y": torch.randn((), generator=generator)} for _ in range(8)]
    method = RecordsAutocast()
    config = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, progress=False,
                         mixed_precision=mixed_precision, report_to=["jsonl"])
    collate = lambda items: {"x": torch.stack([i["x"] for i in items]), "y": torch.stack([i["y"] for i in items])}
    with pytest.MonkeyPatch.context() as patch:  # the crossover's probe, as measured on some CPU
        patch.setattr(hardware, "probe_attention", lambda dtype: {64: (1.0, 2.0), 128: (3.0, 2.0)})
        Trainer(config, torch.nn.Linear(4, 1), method, data, collate).train()
    return method, json.loads((tmp_path / "run" / "run_info.json").read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's probe decides only where no GPU is present")
def test_auto_on_a_cpu_whose_probe_found_bf16_slow_trains_in_float32_and_says_so_once(fresh_probe_cache, capsys):
    write_probe(fresh_probe_cache, float32_ms=1.0, bfloat16_ms=40.0)
    method, info = train_toy(fresh_probe_cache, "auto")
    assert method.autocast and not any(enabled for enabled, _ in method.autocast)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("precision:")]
    assert len(lines) == 1 and lines[0].startswith("precision: float32: this CPU") and "40x slower" in lines[0]
    machine = info["machine"]
    assert machine["cpu_model"] == hardware.cpu_info().model
    assert machine["cpu_flags"] == hardware.cpu_info().reported_flags
    assert machine["cpu_threads"] == torch.get_num_threads() and machine["cpu_kernels"] == hardware.kernel_tag()
    assert machine["precision"]["mixed_precision"] == "no" and "40x slower" in machine["precision"]["reason"]
    # measured before the first step, so even the machine's first run records it
    assert machine["attention"]["matmul_attention_max_keys"] == {"float32": 64}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's probe decides only where no GPU is present")
def test_auto_on_a_cpu_with_fast_bf16_trains_under_bf16_autocast(fresh_probe_cache, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_info", lambda: XEON_AMX)
    write_probe(fresh_probe_cache, float32_ms=6.0, bfloat16_ms=1.0)
    method, info = train_toy(fresh_probe_cache, "auto")
    assert method.autocast and all(enabled and dtype == torch.bfloat16 for enabled, dtype in method.autocast)
    assert info["machine"]["precision"]["mixed_precision"] == "bf16"
    assert info["machine"]["attention"]["matmul_attention_max_keys"] == {"bfloat16": 64}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's probe decides only where no GPU is present")
def test_an_explicit_bf16_on_a_slow_cpu_is_honoured_with_a_warning_giving_the_ratio(fresh_probe_cache, monkeypatch):
    monkeypatch.setattr(hardware, "_warned", set())
    write_probe(fresh_probe_cache, float32_ms=1.0, bfloat16_ms=40.0)
    with pytest.warns(UserWarning, match="runs bf16 products 40x slower than float32"):
        method, info = train_toy(fresh_probe_cache, "bf16")
    assert all(enabled and dtype == torch.bfloat16 for enabled, dtype in method.autocast)
    assert info["machine"]["precision"]["mixed_precision"] == "bf16"


def test_weights_dtype_auto_follows_the_precision_choice(fresh_probe_cache, monkeypatch):
    write_probe(fresh_probe_cache, float32_ms=1.0, bfloat16_ms=40.0)
    assert hardware.resolve_weight_dtype("auto", "cpu")[0] == "float32"
    assert hardware.resolve_weight_dtype("bfloat16", "cpu") == ("bfloat16", "bfloat16 weights, as asked")
    hardware.auto_precision.cache_clear()
    monkeypatch.setattr(hardware, "cpu_info", lambda: XEON_AMX)
    write_probe(fresh_probe_cache, float32_ms=6.0, bfloat16_ms=1.0)
    hardware.cpu_matmul_probe.cache_clear()
    name, reason = hardware.resolve_weight_dtype("auto", "cpu")
    assert name == "bfloat16" and reason.startswith("bfloat16 weights: this CPU (Intel(R) Xeon(R)")


def test_the_environment_sets_what_auto_means_on_every_cpu_without_probing(fresh_probe_cache, monkeypatch):
    monkeypatch.setattr(hardware, "probe_matmul", lambda *a, **k: pytest.fail("probed despite the override"))
    monkeypatch.setattr(hardware, "cpu_info", lambda: XEON_AMX)
    monkeypatch.setenv(hardware.CPU_PRECISION_ENV, "float32")
    choice = hardware.auto_precision("cpu")
    assert (choice.precision, choice.reason) == ("no", "float32: set by ALIGNLOOP_CPU_PRECISION (this CPU was not probed)")
    hardware.auto_precision.cache_clear()
    monkeypatch.setenv(hardware.CPU_PRECISION_ENV, " BF16 ")
    assert hardware.resolve_weight_dtype("auto", "cpu")[0] == "bfloat16"
    # an explicit setting is not the override's business
    assert hardware.resolve_mixed_precision("no", "cpu").precision == "no"
    hardware.auto_precision.cache_clear()
    monkeypatch.setenv(hardware.CPU_PRECISION_ENV, "fp8")
    with pytest.raises(ValueError, match=r"ALIGNLOOP_CPU_PRECISION='fp8': expected float32 or bf16"):
        hardware.auto_precision("cpu")


def test_the_attention_crossover_is_probed_once_and_recorded(fresh_probe_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(hardware, "probe_attention", lambda dtype: calls.append(dtype) or {64: (1.0, 2.0), 128: (3.0, 2.0)})
    assert hardware.matmul_attention_max_keys(torch.float32) == 64
    hardware.matmul_attention_max_keys.cache_clear()
    assert hardware.matmul_attention_max_keys(torch.float32) == 64  # from the file
    assert calls == [torch.float32]
    report = hardware.hardware_report()
    assert report["attention"]["matmul_attention_max_keys"] == {"float32": 64}
