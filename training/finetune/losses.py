"""Training losses per task; the model heads only return logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def task_loss(head: str, problem_type: str | None, output, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    if head == "sequence-classification":
        logits = output.logits.float()  # (B, L)
        if problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, targets["labels"])
        if problem_type == "regression":
            return F.mse_loss(logits[:, 0], targets["labels"])
        return F.cross_entropy(logits, targets["labels"])
    if head == "token-classification":
        logits = output.logits.float()  # (B, T, L)
        labels = targets["labels"][:, : logits.shape[1]]  # (B, T)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    if head == "question-answering":
        start = F.cross_entropy(output.start_logits.float(), targets["start_positions"])
        end = F.cross_entropy(output.end_logits.float(), targets["end_positions"])
        return (start + end) / 2
    raise ValueError(f"no loss for head {head!r}")
