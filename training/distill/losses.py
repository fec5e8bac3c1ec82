"""Distillation losses: soft targets from the teacher's logits, mixed with the hard-label loss, and
TinyBERT's optional hidden-state and attention-map transfer.

    loss = alpha * KD + (1 - alpha) * hard  [+ hidden_weight * hidden + attention_weight * attention]

KD is KL(teacher_T || student_T) of the temperature-T distributions, scaled by T^2 so its gradients
keep their size as T changes (Hinton et al., 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.finetune.losses import IGNORE_INDEX, task_loss, without_padding

SEQUENCE, TOKEN, QA = "sequence-classification", "token-classification", "question-answering"
MULTI, REGRESSION = "multi_label_classification", "regression"


def softmax_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) over the last axis, one value per row: (...,)."""
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)


def binary_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-label KL between the teacher's and the student's sigmoid(z/T) Bernoulli distributions."""
    t, s = teacher / temperature, student / temperature
    p_teacher = torch.sigmoid(t)
    return p_teacher * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_teacher) * (F.logsigmoid(-t) - F.logsigmoid(-s))


def soft_target_loss(
    head: str,
    problem_type: str | None,
    student,
    teacher: dict[str, torch.Tensor],
    temperature: float,
    attention_mask: torch.Tensor,
    token_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The KD term for one batch; `token_mask` (B, T) marks the NER tokens that carry a label."""
    squared = temperature**2
    if head == SEQUENCE:
        s, t = student.logits.float(), teacher["logits"].float()  # (B, L)
        if problem_type == REGRESSION:
            return F.mse_loss(s[:, 0], t[:, 0])  # regression has no distribution to soften
        if problem_type == MULTI:
            return binary_kl(s, t, temperature).mean() * squared
        return softmax_kl(s, t, temperature).mean() * squared
    if head == TOKEN:
        s = student.logits.float()  # (B, T, L)
        t = teacher["logits"].float()[:, : s.shape[1]]  # (B, T, L)
        per_token = softmax_kl(s, t, temperature)  # (B, T)
        mask = token_mask[:, : s.shape[1]].to(per_token.dtype)  # (B, T)
        return (per_token * mask).sum() / mask.sum().clamp(min=1) * squared
    if head == QA:
        losses = []
        for name in ("start_logits", "end_logits"):
            s = without_padding(getattr(student, name).float() / temperature, attention_mask)  # (B, T)
            t = without_padding(teacher[name].float()[:, : s.shape[1]] / temperature, attention_mask)  # (B, T)
            losses.append(softmax_kl(s, t, 1.0).mean())
        return (losses[0] + losses[1]) / 2 * squared
    raise ValueError(f"no distillation loss for head {head!r}")


def hard_label_loss(
    head: str,
    problem_type: str | None,
    student,
    targets: dict[str, torch.Tensor],
    attention_mask: torch.Tensor,
    labelled: torch.Tensor | None = None,
) -> torch.Tensor:
    """`bert finetune`'s loss on the rows that have a label; `labelled` (B,) bool, None = every row."""
    if labelled is None or bool(labelled.all()):
        return task_loss(head, problem_type, student, targets, attention_mask)
    if not bool(labelled.any()):
        return student.logits.sum() * 0.0  # a batch of teacher-labelled texts only: no hard loss
    kept = type(student)(logits=student.logits[labelled])  # (b, L): classification, the only --unlabeled task
    return task_loss(head, problem_type, kept, targets)  # sequence-level: no attention mask needed


def ner_token_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the tokens that carry a tag (no padding, no specials, no non-first sub-tokens)."""
    return labels != IGNORE_INDEX


def hidden_state_loss(
    student_states: tuple[torch.Tensor, ...],
    teacher_states: tuple[torch.Tensor, ...],
    layer_map: list[int],
    projections: torch.nn.ModuleList,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over mapped layers of the MSE between projected student layer i and teacher layer map[i],
    over real tokens. States are (embeddings, layer 1, ...), so layer i's output is at index i + 1."""
    real = attention_mask.bool()  # (B, T)
    losses = []
    for i, (teacher_layer, projection) in enumerate(zip(layer_map, projections)):
        s = projection(student_states[i + 1][real].float())  # (N, H_teacher)
        t = teacher_states[teacher_layer + 1][real].float()  # (N, H_teacher)
        losses.append(F.mse_loss(s, t))
    return torch.stack(losses).mean()


def attention_map_loss(
    student_maps: tuple[torch.Tensor, ...],
    teacher_maps: tuple[torch.Tensor, ...],
    layer_map: list[int],
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over mapped layers of the MSE between attention probabilities, real query and key tokens
    only; head-averaged maps when the head counts differ."""
    real = attention_mask.bool()  # (B, T)
    pairs = real[:, :, None] & real[:, None, :]  # (B, T, T): real query x real key
    losses = []
    for i, teacher_layer in enumerate(layer_map):
        s, t = student_maps[i].float(), teacher_maps[teacher_layer].float()  # (B, nh, T, T)
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)  # (B, 1, T, T)
        weights = pairs[:, None].expand_as(s).to(s.dtype)  # (B, nh, T, T)
        losses.append(((s - t) ** 2 * weights).sum() / weights.sum().clamp(min=1))
    return torch.stack(losses).mean()


def mix(kd: torch.Tensor, hard: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * kd + (1 - alpha) * hard
