"""Reference log-probs computed once, before training (DPO, KTO).

The reference policy never changes, so its log-probs of the training responses are a constant
of the dataset: computing them once replaces a reference forward pass per step and lets LoRA
runs and full fine-tuning alike train without a second model in memory. With LoRA the
reference is the same network with its adapters switched off; with full fine-tuning it is the
model as loaded, before the first update.

Each process scores a slice of the sequences and the results are gathered, so N processes
take 1/N of the time. Sequences are batched longest first to keep padding small.
"""

from __future__ import annotations

import torch
from accelerate.utils import gather_object

from alignloop.data import EncodedExample, pad_batch
from alignloop.engine.progress import TrainingProgress
from alignloop.models.forward import response_logps
from alignloop.models.lora import adapters_disabled


@torch.no_grad()
def reference_logps(model, sequences: list[EncodedExample], pad_token_id: int, batch_size: int,
                    accelerator) -> list[float]:
    """Summed response log-probs of every sequence under the reference, in input order."""
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = sorted(range(rank, len(sequences), world), key=lambda i: -len(sequences[i].input_ids))
    was_training = model.training
    model.eval()
    results: list[tuple[int, float]] = []
    batches = range(0, len(mine), batch_size)
    progress = TrainingProgress(len(batches), 0, enabled=accelerator.is_main_process, description="reference log-probs")
    with progress, adapters_disabled(model), accelerator.autocast():
        for start in batches:
            indices = mine[start : start + batch_size]
            batch = pad_batch([sequences[i] for i in indices], pad_token_id)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            results.extend(zip(indices, response_logps(model, batch)[0].tolist()))
            progress.advance({})
    model.train(was_training)
    gathered = sorted(gather_object(results) if world > 1 else results)
    return [logps for _, logps in gathered]
