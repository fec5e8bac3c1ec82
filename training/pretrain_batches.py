"""The batches of a pretraining step: one global batch per optimizer step, each rank its strided part.

The global batch of `batch_size * grad_accum * processes` instances is a slice of a permutation
of the data seeded by (seed, epoch); rank r reads instances r, r + world, ... of it, split into
`grad_accum` micro-batches, prepared ahead in a background thread.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from training.pretrain_settings import PretrainSettings


def step_indices(n: int, seed: int, epoch: int, step_in_epoch: int, global_batch: int) -> np.ndarray:
    """The instance indices of one global batch: a slice of a permutation seeded by (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[step_in_epoch * global_batch : (step_in_epoch + 1) * global_batch]


def to_tensors(batch: dict[str, np.ndarray], pin: bool) -> dict[str, torch.Tensor]:
    """A `get_batch` dict -> tensors, with the masked positions as flat indices into B*T."""
    labels = batch["mlm_labels"].reshape(-1)  # (B*T,)
    positions = np.flatnonzero(labels != -100)  # (N,)
    arrays = {
        "input_ids": batch["input_ids"],
        "token_type_ids": batch["token_type_ids"],
        "attention_mask": batch["attention_mask"],
        "mlm_positions": positions,
        "mlm_targets": labels[positions],
    }
    if "nsp_labels" in batch:  # NSP or SOP labels; `mlm` data has none
        arrays["nsp_labels"] = batch["nsp_labels"]
    out = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in arrays.items()}
    return {k: v.pin_memory() for k, v in out.items()} if pin else out


class StepLoader:
    """Background thread producing, per optimizer step, this rank's `grad_accum` micro-batches."""

    def __init__(self, data, settings: PretrainSettings, rank: int, world: int, start: tuple[int, int], pin: bool):
        self.data, self.rank, self.world, self.pin = data, rank, world, pin
        self.seed, self.batch_size, self.grad_accum = settings.seed, settings.batch_size, settings.grad_accum
        self.global_batch = settings.batch_size * settings.grad_accum * world
        self.steps_per_epoch = len(data) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the data has {len(data)} instances, fewer than one global batch of {self.global_batch} "
                "(batch size x grad accum x processes)"
            )
        self.position = start  # (epoch, step in epoch) of the next batch to produce
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, settings.prefetch))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        epoch, step = self.position
        try:
            while not self.stop.is_set():
                if step >= self.steps_per_epoch:
                    epoch, step = epoch + 1, 0
                indices = step_indices(len(self.data), self.seed, epoch, step, self.global_batch)
                mine = indices[self.rank :: self.world]
                micro = [
                    to_tensors(
                        self.data.get_batch(mine[m * self.batch_size : (m + 1) * self.batch_size], epoch), self.pin
                    )
                    for m in range(self.grad_accum)
                ]
                step += 1
                self._put(((epoch, step), micro))
        except BaseException as err:  # surfaced in the training loop
            self._put(err)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[tuple[int, int], list[dict[str, torch.Tensor]]]:
        """((epoch, step in epoch) after this batch, micro-batches)."""
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
