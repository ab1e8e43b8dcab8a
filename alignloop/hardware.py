"""What this machine runs fast: the precision (`mixed_precision: auto`) and the attention
kernel (`attn_implementation: auto`), chosen from the hardware at run time, never hard-coded.

CPUs differ by more than an order of magnitude in bfloat16. A Xeon with AMX multiplies bf16
matrices ~6x faster than float32; an AMD EPYC with AVX2 only has no bf16 instructions, and
oneDNN emulates them there ~40x SLOWER than float32 (torch 2.13, 1024² products: 60 GFLOP/s
float32 vs 0.8 bf16 on a 2-core EPYC). A recipe that says bf16 is a speed-up on the first and
a trap on the second, so the default is `auto`:

- on CUDA, from the device's capability (bf16 from compute capability 8.0, fp16 from 7.0);
- on a CPU, from a probe: a product at the model's own width, timed in float32 and in bf16
  (a few ms where bf16 is fast, ~100 ms where it is emulated), together with the ISA flags
  (avx512_bf16 / amx_bf16 / aarch64 bf16: bf16 in hardware). bf16 is chosen only where it
  measured faster by `BF16_MIN_SPEEDUP` AND the flags say the CPU has it (or no flags could
  be read): a measurement alone can be fooled by a noisy neighbour, the flags alone by a
  kernel library that does not use them.

Probes are cached per machine (CPU model + torch version + the kernels torch may use, which
`ATEN_CPU_CAPABILITY` and `ONEDNN_MAX_CPU_ISA` can lower) under `$ALIGNLOOP_HOME/hardware/`,
so each machine pays for them once; `choose_cpu_precision` and `matmul_attention_max_keys_from`
are the pure decisions, tested with given timings.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import statistics
import time
import types
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from alignloop.config import ConfigError

__all__ = [
    "CpuInfo", "MatmulProbe", "PrecisionChoice", "cpu_info", "probe_matmul", "choose_cpu_precision",
    "choose_cuda_precision", "cpu_precision_override", "resolve_mixed_precision", "resolve_weight_dtype", "matmul_attention_max_keys",
    "matmul_attention_max_keys_from", "hardware_report",
]

Precision = Literal["no", "bf16", "fp16"]
# Flags that mean bf16 arithmetic in hardware (x86: AVX512-BF16, AMX; aarch64: the BF16 extension).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
# The flags run_info.json and the one-line report name.
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "neon", "bf16")
# bf16 must be this much faster than float32 to be worth its rounding.
BF16_MIN_SPEEDUP = 1.2
# The probe's product: (rows, width) @ (width, width); rows like a short batch of tokens.
PROBE_ROWS = 128
DEFAULT_WIDTH = 576  # the built-in model's hidden size, when the caller has no model yet
# Set to float32 or bf16, what `auto` means on every CPU (`cpu_precision_override`).
CPU_PRECISION_ENV = "ALIGNLOOP_CPU_PRECISION"


# ---------------------------------------------------------------- the CPU


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str] | None  # None: this platform does not say (not Linux)
    threads: int

    @property
    def reported_flags(self) -> list[str]:
        return [flag for flag in REPORTED_FLAGS if self.flags and flag in self.flags]

    @property
    def native_bf16(self) -> bool | None:
        return None if self.flags is None else any(flag in self.flags for flag in NATIVE_BF16_FLAGS)

    @property
    def isa(self) -> str:
        """The widest relevant instruction set, for one-line messages: 'amx', 'avx512', 'avx2'."""
        if self.flags is None:
            return platform.machine()
        for name, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"), ("avx512", "avx512f"),
                           ("avx2", "avx2"), ("bf16", "bf16"), ("neon", "neon")):
            if flag in self.flags:
                return name
        return platform.machine()

    @property
    def slug(self) -> str:
        """A file-name-safe name for the CPU and its widest instruction set: 'amd-epyc-avx2',
        'intel-xeon-platinum-8480c-amx'. The instruction set is part of it because a KVM guest's
        model name can hide the generation: two machines here both say 'AMD EPYC', one with
        AVX2 only (bf16 59x slower than float32), one with avx512_bf16 (bf16 1.9-2.4x faster),
        and they must not share a probe cache or a results folder."""
        model = re.sub(r"[^a-z0-9]+", "-", self.model.lower()).strip("-")[:60] or "unknown-cpu"
        isa = re.sub(r"[^a-z0-9]+", "-", self.isa.lower()).strip("-")
        return model if not isa or model.endswith(isa) else f"{model}-{isa}"


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str] | None]:
    """(model name, flags) from /proc/cpuinfo's text (x86 'flags', aarch64 'Features')."""
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = frozenset(value.split())
    return model, flags


@functools.cache
def cpu_info() -> CpuInfo:
    try:
        model, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        model, flags = "", None
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown CPU", flags, torch.get_num_threads())


# ---------------------------------------------------------------- precision


@dataclass(frozen=True)
class MatmulProbe:
    """Seconds for one (rows, width) @ (width, width) product, the fastest of a few calls."""

    rows: int
    width: int
    float32_s: float
    bfloat16_s: float

    @property
    def bf16_speedup(self) -> float:
        """float32 time / bf16 time: above 1, bf16 is faster."""
        return self.float32_s / self.bfloat16_s


@dataclass(frozen=True)
class PrecisionChoice:
    precision: Precision  # what Accelerate and autocast get
    reason: str  # one line: why
    bf16_speedup: float | None = None  # measured on this CPU (None: not measured, e.g. CUDA)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype for runs without autocast (evaluation, sampling) that follow this choice."""
        return {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]


def _fastest_call(fn, calls: int, budget_s: float) -> float:
    fn()  # warm-up: first-call dispatch and packing
    times = []
    started = time.perf_counter()
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if time.perf_counter() - started > budget_s:
            break
    return min(times)


def probe_matmul(width: int = DEFAULT_WIDTH, rows: int = PROBE_ROWS, calls: int = 5) -> MatmulProbe:
    """Time a float32 and a bf16 product of the model's width on this CPU (~1 ms + ~5 ms on AMX;
    ~1 ms + ~100 ms where bf16 is emulated: the slow side stops after its time budget)."""
    generator = torch.Generator().manual_seed(0)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(rows, width, generator=generator).to(dtype)
        b = torch.randn(width, width, generator=generator).to(dtype)
        times[dtype] = _fastest_call(lambda: torch.mm(a, b), calls, budget_s=0.05)
    return MatmulProbe(rows, width, times[torch.float32], times[torch.bfloat16])


def _ratio_words(speedup: float) -> str:
    if speedup >= 1:
        return f"{speedup:.1f}x faster"
    return f"{1 / speedup:.0f}x slower" if speedup < 0.5 else f"{1 / speedup:.1f}x slower"


def choose_cpu_precision(probe: MatmulProbe, cpu: CpuInfo) -> PrecisionChoice:
    """bf16 where this CPU measured it faster and has it in hardware; float32 otherwise."""
    speedup = probe.bf16_speedup
    where = f"this CPU ({cpu.model}, {cpu.isa})"
    measured = f"runs bf16 products {_ratio_words(speedup)} than float32"
    if cpu.native_bf16 is False:
        return PrecisionChoice("no", f"float32: {where} has no bf16 instructions and {measured}", speedup)
    if speedup < BF16_MIN_SPEEDUP:
        return PrecisionChoice("no", f"float32: {where} {measured}", speedup)
    return PrecisionChoice("bf16", f"bf16 autocast: {where} {measured}", speedup)


def choose_cuda_precision(capability: tuple[int, int], name: str) -> PrecisionChoice:
    """bf16 from compute capability 8.0 (Ampere), fp16 from 7.0 (Volta/Turing), else float32."""
    where = f"{name} (compute capability {capability[0]}.{capability[1]})"
    if capability >= (8, 0):
        return PrecisionChoice("bf16", f"bf16 autocast: {where} has bf16 tensor cores")
    if capability >= (7, 0):
        return PrecisionChoice("fp16", f"fp16 autocast: {where} has fp16 but no bf16 tensor cores")
    return PrecisionChoice("no", f"float32: {where} has no half-precision tensor cores")


def _cache_path(cpu: CpuInfo) -> Path:
    # lazy: alignloop.models imports this module (models/attention asks it for the crossover)
    from alignloop.models.cache import alignloop_home

    return alignloop_home() / "hardware" / f"{cpu.slug}-torch-{torch.__version__.replace('+', '-')}-{kernel_tag()}.json"


def kernel_tag() -> str:
    """The kernels torch may use on this CPU: its ATen capability and oneDNN's ISA cap, lowered by
    `ATEN_CPU_CAPABILITY=avx2` / `ONEDNN_MAX_CPU_ISA=AVX2` (on an AMD EPYC with avx512_bf16,
    those two make bf16 products 0.5 GFLOP/s instead of 102, as on an AVX2-only CPU). The same
    CPU under other caps must not read the other's probes."""
    tag = torch.backends.cpu.get_cpu_capability().lower()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return f"{tag}-onednn-{onednn.lower()}" if onednn else tag


def _read_cache(cpu: CpuInfo) -> dict[str, Any]:
    try:
        cached = json.loads(_cache_path(cpu).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) and cached.get("cpu_model") == cpu.model else {}


def _write_cache(cpu: CpuInfo, key: str, value: Any) -> None:
    """Add one probe's result to this machine's cache file (written whole, then renamed)."""
    path = _cache_path(cpu)
    cached = _read_cache(cpu) or {"cpu_model": cpu.model, "torch": torch.__version__}
    cached[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        scratch.write_text(json.dumps(cached, indent=2) + "\n", encoding="utf-8")
        scratch.replace(path)
    except OSError:
        pass  # a read-only home: probe again next time, nothing is lost


@functools.cache
def cpu_matmul_probe(width: int = DEFAULT_WIDTH) -> MatmulProbe:
    """This machine's probe at `width`, from the cache or measured now (and cached)."""
    cpu = cpu_info()
    key = f"matmul_{PROBE_ROWS}x{width}"
    entry = _read_cache(cpu).get(key)
    if isinstance(entry, dict):
        try:
            return MatmulProbe(**entry)
        except TypeError:
            pass
    probe = probe_matmul(width)
    _write_cache(cpu, key, asdict(probe))
    return probe


def cpu_precision_override() -> Precision | None:
    """`ALIGNLOOP_CPU_PRECISION` (float32 or bf16): what `auto` means on every CPU, instead of the
    probe's answer. For a fleet of mixed CPUs that must all train alike, and for the test suite,
    whose float32 identities (policy = reference at step 1) would otherwise hold on one CPU and
    be a bf16 rounding off on the next. Explicit settings (`mixed_precision: bf16`) still win."""
    value = os.environ.get(CPU_PRECISION_ENV, "").strip().lower()
    if not value:
        return None
    choices: dict[str, Precision] = {"float32": "no", "no": "no", "bf16": "bf16"}
    if value not in choices:
        raise ConfigError(f"{CPU_PRECISION_ENV}={value!r}: expected float32 or bf16 (or unset, to probe this CPU)")
    return choices[value]


@functools.cache
def auto_precision(device_type: str = "", width: int = DEFAULT_WIDTH) -> PrecisionChoice:
    """What `auto` means here: on CUDA from the capability, on a CPU from the probe (or from
    `ALIGNLOOP_CPU_PRECISION`, see `cpu_precision_override`)."""
    if (device_type or _default_device_type()) == "cuda":
        return choose_cuda_precision(torch.cuda.get_device_capability(), torch.cuda.get_device_name())
    override = cpu_precision_override()
    if override is not None:
        name = {"no": "float32", "bf16": "bf16 autocast"}[override]
        return PrecisionChoice(override, f"{name}: set by {CPU_PRECISION_ENV} (this CPU was not probed)")
    return choose_cpu_precision(cpu_matmul_probe(width), cpu_info())


def _default_device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


_warned: set[tuple[str, str]] = set()


def resolve_mixed_precision(requested: str, device_type: str = "", width: int = DEFAULT_WIDTH) -> PrecisionChoice:
    """`requested` ('auto', 'no', 'bf16', 'fp16') as the precision to run.

    `auto` follows `auto_precision`. An explicit bf16 on a CPU that runs it slowly is honoured,
    with a warning (once per process) that gives the measured ratio.
    """
    device_type = device_type or _default_device_type()
    if requested == "auto":
        return auto_precision(device_type, width)
    if requested == "bf16" and device_type == "cpu":
        probe = cpu_matmul_probe(width)
        if probe.bf16_speedup < BF16_MIN_SPEEDUP:
            cpu = cpu_info()
            message = (f"mixed_precision: bf16 as asked, but this CPU ({cpu.model}, {cpu.isa}) runs bf16 products "
                       f"{_ratio_words(probe.bf16_speedup)} than float32; 'auto' (or 'no') would train in float32")
            if (requested, device_type) not in _warned:
                _warned.add((requested, device_type))
                warnings.warn(message, stacklevel=2)
            return PrecisionChoice("bf16", f"bf16 autocast, as asked ({_ratio_words(probe.bf16_speedup)} "
                                           "than float32 on this CPU)", probe.bf16_speedup)
        return PrecisionChoice("bf16", "bf16 autocast, as asked", probe.bf16_speedup)
    names = {"no": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}
    return PrecisionChoice(requested, f"{names.get(requested, requested)}, as asked")  # type: ignore[arg-type]


def resolve_weight_dtype(requested: str, device_type: str = "", width: int = DEFAULT_WIDTH) -> tuple[str, str]:
    """A weights dtype setting ('auto', 'float32', 'bfloat16', 'float16') for runs without
    autocast (evaluation, candidate generation) as (dtype name, one-line reason). `auto` is
    bfloat16 (float16 on an older GPU) where `auto` mixed precision would pick it, else float32."""
    if requested != "auto":
        return requested, f"{requested} weights, as asked"
    choice = auto_precision(device_type or _default_device_type(), width)
    name = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}[choice.precision]
    return name, f"{name} weights: {choice.reason.partition(': ')[2]}"


# ---------------------------------------------------------------- attention kernel

ATTENTION_PROBE_KEYS = (64, 128, 192, 256, 384, 512)
ATTENTION_PROBE_TOKENS = 1024  # rows x keys per probe batch, like a short training batch
# The built-in model's attention: 9 query heads on 3 key heads of size 64.
ATTENTION_PROBE_HEADS, ATTENTION_PROBE_KV_HEADS, ATTENTION_PROBE_HEAD_SIZE = 9, 3, 64


def matmul_attention_max_keys_from(timings: dict[int, tuple[float, float]]) -> int:
    """The longest key length up to which matmul attention was faster at every measured length.

    `timings[keys] = (matmul_s, sdpa_s)`. 0 when it lost at the shortest length. Lengths
    beyond the last win are left to the fused kernel, which also needs O(T) memory where matmul
    attention keeps T x T scores per head for the backward pass.
    """
    longest = 0
    for keys in sorted(timings):
        matmul_s, sdpa_s = timings[keys]
        if matmul_s >= sdpa_s:
            break
        longest = keys
    return longest


def probe_attention(dtype: torch.dtype, keys_list=ATTENTION_PROBE_KEYS, calls: int = 3) -> dict[int, tuple[float, float]]:
    """Forward + backward seconds of matmul attention and of SDPA per key length (causal plus
    padding masks, as training batches have), the two kernels alternating; about a second."""
    # lazy: transformers loads only to probe, and alignloop.models.attention imports this module
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    # lazy: alignloop.models.attention imports this module for the crossover it measures here
    from alignloop.models.attention import matmul_attention

    heads, kv_heads, size = ATTENTION_PROBE_HEADS, ATTENTION_PROBE_KV_HEADS, ATTENTION_PROBE_HEAD_SIZE
    module = types.SimpleNamespace(is_causal=True, training=True, num_key_value_groups=heads // kv_heads)
    kernels = {"matmul": lambda q, k, v, m: matmul_attention(module, q, k, v, m),
               "sdpa": lambda q, k, v, m: sdpa_attention_forward(module, q, k, v, m)[0]}
    generator = torch.Generator().manual_seed(0)
    timings = {}
    with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        for keys in keys_list:
            batch = max(1, ATTENTION_PROBE_TOKENS // keys)
            q = torch.randn(batch, heads, keys, size, generator=generator).requires_grad_()
            k, v = (torch.randn(batch, kv_heads, keys, size, generator=generator).requires_grad_() for _ in range(2))
            real = torch.arange(keys) < torch.linspace(keys // 2, keys, batch).long()[:, None]
            mask = (torch.ones(keys, keys, dtype=torch.bool).tril()[None] & real[:, None, :])[:, None]
            seconds: dict[str, list[float]] = {"matmul": [], "sdpa": []}
            for call in range(calls + 1):
                for name, kernel in kernels.items():
                    start = time.perf_counter()
                    kernel(q, k, v, mask).float().square().mean().backward()
                    if call:  # the first call of each is a warm-up
                        seconds[name].append(time.perf_counter() - start)
            timings[keys] = (statistics.median(seconds["matmul"]), statistics.median(seconds["sdpa"]))
            if timings[keys][0] >= timings[keys][1]:
                break  # past the crossover: longer lengths only widen SDPA's lead
    return timings


@functools.cache
def matmul_attention_max_keys(dtype: torch.dtype) -> int:
    """This CPU's crossover for training attention in `dtype` (cached per machine): up to this
    many keys `attn_implementation: auto` uses matmul attention, beyond it SDPA."""
    cpu = cpu_info()
    key = f"attention_max_keys_{str(dtype).removeprefix('torch.')}"
    cached = _read_cache(cpu).get(key)
    if isinstance(cached, dict) and isinstance(cached.get("max_keys"), int):
        return cached["max_keys"]
    timings = probe_attention(dtype)
    longest = matmul_attention_max_keys_from(timings)
    _write_cache(cpu, key, {"max_keys": longest,
                            "timings_ms": {str(k): [round(m * 1e3, 3), round(s * 1e3, 3)] for k, (m, s) in timings.items()}})
    return longest


# ---------------------------------------------------------------- the record


def hardware_report(precision: PrecisionChoice | None = None) -> dict[str, Any]:
    """What run_info.json records of the machine: CPU model, ISA flags, threads, GPU, and the
    precision and attention kernel chosen (with the measurements behind them)."""
    cpu = cpu_info()
    report: dict[str, Any] = {"cpu_model": cpu.model, "cpu_flags": cpu.reported_flags, "cpu_threads": torch.get_num_threads(),
                              "cpu_kernels": kernel_tag(), "platform": platform.platform()}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    if precision is not None:
        report["precision"] = {"mixed_precision": precision.precision, "reason": precision.reason,
                               "bf16_speedup": precision.bf16_speedup}
    if precision is not None and _default_device_type() == "cpu":
        # A training run on a CPU: measure the crossover its attention will use now (once per
        # machine, ~0.3 s) rather than at the first forward pass, so the record has it even on
        # the machine's first run.
        matmul_attention_max_keys(precision.dtype)
    cached = _read_cache(cpu)
    attention = {key.removeprefix("attention_max_keys_"): value["max_keys"] for key, value in cached.items()
                 if key.startswith("attention_max_keys_") and isinstance(value, dict)}
    if attention:
        report["attention"] = {"matmul_attention_max_keys": attention,
                               "rule": "training on CPU: matmul attention up to this many keys, SDPA beyond"}
    return report
