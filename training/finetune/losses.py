"""Training losses per task; the model heads only return logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def without_padding(logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T) start/end logits with padded positions at a huge negative: never an answer.

    Our encoder leaves padded positions' hidden states at zero, so their logit is the head's bias
    alone: a fixed share of the softmax that training cannot push down. Left in, a window padded
    to a long batch spreads its probability over the padding and learns more slowly (one epoch
    of SQuAD without this mask scored F1 11 against the Trainer's 22).
    """
    if attention_mask is None:
        return logits
    return logits.masked_fill(attention_mask[:, : logits.shape[1]] == 0, torch.finfo(logits.dtype).min)


def task_loss(
    head: str,
    problem_type: str | None,
    output,
    targets: dict[str, torch.Tensor],
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The head's training loss; `attention_mask` (B, T) keeps QA answers off padded positions."""
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
        start = F.cross_entropy(
            without_padding(output.start_logits.float(), attention_mask), targets["start_positions"]
        )
        end = F.cross_entropy(without_padding(output.end_logits.float(), attention_mask), targets["end_positions"])
        return (start + end) / 2
    raise ValueError(f"no loss for head {head!r}")
