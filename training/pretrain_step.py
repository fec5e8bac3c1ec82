"""One pretraining step and evaluation: MLM (+ NSP or SOP) losses summed per micro-batch, divided by global counts.

L = L_MLM + L_pair, where L_MLM is the mean cross-entropy over every masked token of the global
batch and L_pair the mean over its sequences of the sentence-pair head's cross-entropy (NSP labels
for `mlm+nsp`, order labels for `mlm+sop`; the `mlm` objective has no pair term: L = L_MLM), so
the gradient is the same however the batch is split over processes and micro-batches. The
vocabulary projection runs only at the masked positions.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from training import distributed
from training.device import autocast
from training.pretrain_batches import to_tensors
from training.pretrain_settings import PretrainSettings


def pretraining_sums(model, batch: dict[str, torch.Tensor], kind: str, precision: str) -> dict[str, torch.Tensor]:
    """Summed (not averaged) MLM and sentence-pair losses and correct counts of one micro-batch.

    The pair head's terms (nsp_loss, nsp_correct) are there only when the batch has `nsp_labels`
    (NSP or SOP labels); an `mlm` batch has none.
    """
    with autocast(kind, precision):
        out = model(
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            mlm_positions=batch["mlm_positions"],
        )
    mlm_logits = out.mlm_logits.float()  # (N, V)
    sums = {
        "mlm_loss": F.cross_entropy(mlm_logits, batch["mlm_targets"], reduction="sum"),
        "mlm_correct": (mlm_logits.argmax(-1) == batch["mlm_targets"]).sum(),
    }
    if "nsp_labels" in batch:
        nsp_logits = out.nsp_logits.float()  # (B, 2)
        sums["nsp_loss"] = F.cross_entropy(nsp_logits, batch["nsp_labels"], reduction="sum")
        sums["nsp_correct"] = (nsp_logits.argmax(-1) == batch["nsp_labels"]).sum()
    return sums


def batch_loss(sums: dict[str, torch.Tensor], mlm_total: float, pair_total: float) -> torch.Tensor:
    """L = L_MLM (+ L_NSP or L_SOP): each summed loss divided by its count over the whole global batch."""
    loss = sums["mlm_loss"] / mlm_total
    if "nsp_loss" in sums:
        loss = loss + sums["nsp_loss"] / pair_total
    return loss


STAT_KEYS = ("mlm_loss", "mlm_correct", "mlm_count", "nsp_loss", "nsp_correct", "nsp_count", "tokens")
PAIR_METRIC = {"mlm+nsp": "nsp", "mlm+sop": "sop", "mlm": None}  # name of the pair head's metrics per objective


def summarise(stats: torch.Tensor, objective: str = "mlm+nsp") -> dict[str, float]:
    """Summed STAT_KEYS (after the all-reduce) -> means, accuracies and perplexity.

    The pair head's loss and accuracy are named nsp_* for `mlm+nsp`, sop_* for `mlm+sop`, and
    are absent for `mlm` (whose loss is the MLM loss alone).
    """
    s = dict(zip(STAT_KEYS, stats.tolist()))
    mlm_loss = s["mlm_loss"] / max(1.0, s["mlm_count"])
    record = {"loss": mlm_loss, "mlm_loss": mlm_loss, "mlm_acc": s["mlm_correct"] / max(1.0, s["mlm_count"])}
    pair = PAIR_METRIC[objective]
    if pair is not None:
        pair_loss = s["nsp_loss"] / max(1.0, s["nsp_count"])
        record = {
            "loss": mlm_loss + pair_loss,
            "mlm_loss": mlm_loss,
            f"{pair}_loss": pair_loss,
            "mlm_acc": record["mlm_acc"],
            f"{pair}_acc": s["nsp_correct"] / max(1.0, s["nsp_count"]),
        }
    return record | {"perplexity": math.exp(min(mlm_loss, 50.0)), "tokens": s["tokens"]}


def optimizer_step(
    model, raw_model, micro, optimizer, scheduler, scaler, max_grad_norm: float, world_size: int, kind, precision
) -> torch.Tensor:
    """Forward/backward over this rank's micro-batches, clip, step: one optimizer step; returns summed stats.

    Each micro-batch's loss is divided by the masked-token and sequence counts of the whole
    global batch (all ranks), times `world_size` because DDP averages gradients over ranks.
    """
    device = micro[0]["input_ids"].device
    counts = torch.tensor(
        [
            sum(b["mlm_targets"].numel() for b in micro),
            sum(b["nsp_labels"].numel() for b in micro if "nsp_labels" in b),
        ],
        dtype=torch.float64,
        device=device,
    )
    mlm_total, nsp_total = distributed.all_reduce_sum(counts).clamp(min=1).tolist()
    stats = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=device)
    for m, batch in enumerate(micro):
        last = m == len(micro) - 1
        with model.no_sync() if world_size > 1 and not last else contextlib.nullcontext():
            sums = pretraining_sums(model, batch, kind, precision)
            loss = batch_loss(sums, mlm_total, nsp_total) * world_size
            scaler.scale(loss).backward()
        stats += step_stats(sums, batch)
    scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stats


@torch.no_grad()
def evaluate(model, data, settings: PretrainSettings, info: distributed.DistInfo, device, kind, precision) -> dict:
    """MLM (and NSP/SOP) loss and accuracy on the first `eval_batches` batches of a held-out set (epoch-0 masks)."""
    was_training = model.training
    model.eval()
    n = len(data) if settings.eval_batches <= 0 else min(len(data), settings.eval_batches * settings.batch_size)
    mine = np.arange(n)[info.rank :: info.world_size]
    stats = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=device)
    for start in range(0, len(mine), settings.batch_size):
        batch = to_tensors(data.get_batch(mine[start : start + settings.batch_size], 0), pin=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        stats += step_stats(pretraining_sums(model, batch, kind, precision), batch)
    distributed.all_reduce_sum(stats)
    model.train(was_training)
    return summarise(stats, data.objective)


def step_stats(sums: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    pair = "nsp_loss" in sums
    values = [
        sums["mlm_loss"].detach(),
        sums["mlm_correct"],
        batch["mlm_targets"].numel(),
        sums["nsp_loss"].detach() if pair else 0,
        sums["nsp_correct"] if pair else 0,
        batch["nsp_labels"].numel() if pair else 0,
        batch["attention_mask"].sum(),
    ]
    return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=sums["mlm_loss"].device) for v in values])
