"""Weights for sampling in a lower precision than training keeps.

Decoding multiplies a few rows by every weight matrix at each step, so on a CPU its time is
spent reading weights, not multiplying. bf16 weights are half the bytes, and the CPU's AMX
units take them directly: the built-in model, 16 prompts × 48 new tokens on a 2-core Xeon,
samples in 3.7 s from bf16 weights against 5.7 s from float32 ones (and 8.7 s from float32
weights cast to bf16 by autocast at every product). vLLM samples in bf16 for the same reason.

The policy that samples is then not exactly the policy that trains (float32 weights under
autocast): the usual mismatch of an RL setup whose inference engine is separate. The RL methods
recompute every log-prob they train on with the training weights, so it only makes the samples
slightly off-policy.

Where bf16 is emulated (AVX2 only), int8 weights look like the same lever, and were measured and
rejected: torch 2.13's dynamic int8 linear layers (fbgemm, per-channel weights) run the built-in
model's decoding products 2.1x faster (its 49k-token output layer 6.7x: 11 ms against 72 ms for
32 rows on the 2-core AVX2 EPYC), but its activations have outlier channels (max / rms 15-240),
so quantising each call's rows to 7-8 bits moves every layer's output by 3-28 % of its norm. The
sampler is then another model: KL(float32 || int8) 2.1 nats per token, 2.2 per 32-token reply
from the output layer alone, about the whole KL budget of the demo's RL; and quantising the
merged weights costs 3.5 s per rollout. (torchao's int8, without torch.compile, is slower than
float32 on that CPU.)
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def weights_in_dtype(model: torch.nn.Module, dtype: torch.dtype | None) -> Iterator[torch.nn.Module]:
    """Inside the block every floating-point parameter of `model` is a `dtype` copy without
    gradient; afterwards the original parameters are back, untouched. None: the weights stay
    as they are (the output layer still gets a contiguous input).

    Tied parameters (input and output embeddings) share one copy. Buffers keep their dtype:
    the rotary frequencies are used in float32 either way.
    """
    if dtype is None:
        with contiguous_output_layer_input(model):
            yield model
        return
    originals: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    copies: dict[int, torch.nn.Parameter] = {}
    try:
        with torch.no_grad():
            for module in model.modules():
                for name, parameter in list(module.named_parameters(recurse=False)):
                    if not parameter.is_floating_point() or parameter.dtype == dtype:
                        continue
                    if id(parameter) not in copies:
                        copies[id(parameter)] = torch.nn.Parameter(parameter.to(dtype), requires_grad=False)
                    originals.append((module, name, parameter))
                    setattr(module, name, copies[id(parameter)])
        with contiguous_output_layer_input(model):
            yield model
    finally:
        for module, name, parameter in originals:
            setattr(module, name, parameter)


@contextlib.contextmanager
def contiguous_output_layer_input(model: torch.nn.Module) -> Iterator[None]:
    """Hands the output layer a contiguous input inside the block.

    Generation projects only the last position, a strided (B, 1, H) slice of the hidden
    states. On the CPU, `F.linear` of such a slice runs as a batched product with the weight
    copied once per row. The built-in model's 49k-token head: in bf16 on the AMX Xeon, 16 rows,
    2.4 s against 8 ms on a contiguous copy of the slice; in float32 on the AVX2 EPYC, 32 rows,
    460 ms against 107 ms, most of a decoding step. So it applies whatever the dtype.
    """
    output_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output_layer is None:
        yield
        return
    handle = output_layer.register_forward_pre_hook(lambda _, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()
