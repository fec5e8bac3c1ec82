"""The distillation losses against hand computations on fixed batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.heads import ClassifierOutput, QuestionAnsweringOutput
from tests.helpers.tolerances import FP32_EPS, network_tolerance, sum_tolerance
from training.distill import losses


def _kl(teacher: np.ndarray, student: np.ndarray, temperature: float) -> float:
    """KL(softmax(teacher/T) || softmax(student/T)) in float64."""

    def log_softmax(z):
        z = np.asarray(z, dtype=np.float64) / temperature
        return z - np.log(np.exp(z - z.max()).sum()) - z.max()

    log_t, log_s = log_softmax(teacher), log_softmax(student)
    return float((np.exp(log_t) * (log_t - log_s)).sum())


def _close(value: torch.Tensor, expected: float, terms: int) -> None:
    # fp32 against float64: each of `terms` exp/log/products rounds a few times, then they are summed
    assert float(value.detach()) == pytest.approx(expected, abs=sum_tolerance(4 * terms, max(1.0, abs(expected))))


STUDENT = [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]
TEACHER = [[0.5, 0.0, 1.0], [2.0, 1.0, -1.0]]


def test_softmax_kd_uses_the_temperature_and_scales_by_its_square():
    student = ClassifierOutput(logits=torch.tensor(STUDENT))
    teacher = {"logits": torch.tensor(TEACHER)}
    for temperature in (1.0, 2.0, 4.0):
        kd = losses.soft_target_loss("sequence-classification", None, student, teacher, temperature, None)
        expected = np.mean([_kl(t, s, temperature) for t, s in zip(TEACHER, STUDENT)]) * temperature**2
        _close(kd, expected, terms=6)


def test_multi_label_kd_is_a_binary_kl_per_label_and_regression_an_mse():
    student = ClassifierOutput(logits=torch.tensor(STUDENT))
    teacher = {"logits": torch.tensor(TEACHER)}
    kd = losses.soft_target_loss("sequence-classification", "multi_label_classification", student, teacher, 2.0, None)
    p_t = 1 / (1 + np.exp(-np.array(TEACHER) / 2))
    p_s = 1 / (1 + np.exp(-np.array(STUDENT) / 2))
    binary = p_t * np.log(p_t / p_s) + (1 - p_t) * np.log((1 - p_t) / (1 - p_s))
    _close(kd, binary.mean() * 4, terms=6)
    mse = losses.soft_target_loss("sequence-classification", "regression", student, teacher, 2.0, None)
    _close(mse, np.mean((np.array(STUDENT)[:, 0] - np.array(TEACHER)[:, 0]) ** 2), terms=2)


def test_ner_kd_averages_over_the_labelled_tokens_only():
    rng = np.random.default_rng(0)
    student_logits, teacher_logits = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    # [CLS] word ##piece word [SEP] / [CLS] word [SEP] pad pad: only the words' first tokens carry a tag
    labels = torch.tensor([[-100, 2, -100, 0, -100], [-100, 1, -100, -100, -100]])
    attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    kd = losses.soft_target_loss(
        "token-classification",
        None,
        ClassifierOutput(logits=torch.tensor(student_logits, dtype=torch.float32)),
        {"logits": torch.tensor(teacher_logits, dtype=torch.float32)},
        2.0,
        attention,
        losses.ner_token_mask(labels),
    )
    kept = [(0, 1), (0, 3), (1, 1)]
    expected = np.mean([_kl(teacher_logits[b, t], student_logits[b, t], 2.0) for b, t in kept]) * 4
    _close(kd, expected, terms=9)


def test_qa_kd_averages_start_and_end_with_padding_masked():
    student_start, student_end = [[1.0, 0.0, 2.0, 50.0]], [[0.0, 1.0, -1.0, -50.0]]
    teacher_start, teacher_end = [[0.0, 1.0, 1.0, -50.0]], [[2.0, 0.0, 0.0, 50.0]]
    attention = torch.tensor([[1, 1, 1, 0]])  # the huge logits sit on padding: they must not count
    kd = losses.soft_target_loss(
        "question-answering",
        None,
        QuestionAnsweringOutput(torch.tensor(student_start), torch.tensor(student_end)),
        {"start_logits": torch.tensor(teacher_start), "end_logits": torch.tensor(teacher_end)},
        2.0,
        attention,
    )
    start = _kl(teacher_start[0][:3], student_start[0][:3], 2.0)
    end = _kl(teacher_end[0][:3], student_end[0][:3], 2.0)
    _close(kd, (start + end) / 2 * 4, terms=6)


def test_alpha_mixes_and_unlabelled_rows_get_no_hard_loss():
    logits = torch.tensor(STUDENT + [[0.0, 0.0, 1.0]], requires_grad=True)  # row 1 is teacher-labelled only
    student = ClassifierOutput(logits=logits)
    labelled = torch.tensor([True, False, True])
    targets = {"labels": torch.tensor([2, 0])}  # rows 0 and 2
    hard = losses.hard_label_loss("sequence-classification", None, student, targets, None, labelled)
    expected = -np.mean([np.log(np.exp(STUDENT[0][2]) / np.exp(STUDENT[0]).sum()), np.log(1 / (2 + np.e))])
    _close(hard, expected, terms=6)
    hard.backward()
    assert torch.equal(logits.grad[1], torch.zeros(3))  # nothing reaches the unlabelled row
    kd = torch.tensor(0.75)
    for alpha in (0.0, 0.3, 1.0):
        assert float(losses.mix(kd, hard.detach(), alpha)) == pytest.approx(
            alpha * 0.75 + (1 - alpha) * float(hard.detach()), abs=sum_tolerance(2, 1.0)
        )  # two fp32 products summed
    only_unlabelled = losses.hard_label_loss(
        "sequence-classification", None, student, {}, None, torch.tensor([False, False, False])
    )
    assert float(only_unlabelled.detach()) == 0.0


def test_intermediate_losses_vanish_for_a_student_that_is_the_teacher(tiny_config):
    from model import build_model
    from training.distill.student import hidden_projections, student_from_teacher

    torch.manual_seed(0)
    teacher = build_model(tiny_config.replace(num_hidden_layers=3), "sequence-classification", 2).eval()
    student = student_from_teacher(teacher, [0, 1, 2]).eval()
    ids = torch.tensor([[2, 7, 9, 3, 0], [2, 5, 3, 0, 0]])
    mask = (ids != 0).long()
    flags = {"output_hidden_states": True, "output_attentions": True}
    s, t = student.bert(ids, mask, **flags), teacher.bert(ids, mask, **flags)
    projections = hidden_projections(student.config, teacher.config, 3)
    assert losses.hidden_state_loss(s.hidden_states, t.hidden_states, [0, 1, 2], projections, mask).item() == 0.0
    assert losses.attention_map_loss(s.attentions, t.attentions, [0, 1, 2], mask).item() == 0.0
    # the opt-in path returns what the default one does, through the explicit attention math
    plain = teacher.bert(ids, mask)
    assert len(t.hidden_states) == 4 and len(t.attentions) == 3 and t.attentions[0].shape == (2, 2, 5, 5)
    tolerance = network_tolerance(3, tiny_config.intermediate_size, 10.0, FP32_EPS)  # sdpa vs explicit math
    assert torch.allclose(t.last_hidden_state, plain.last_hidden_state, atol=tolerance, rtol=0)
    assert torch.equal(t.hidden_states[-1], t.last_hidden_state)
