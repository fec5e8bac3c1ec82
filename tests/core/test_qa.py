"""QA span search on crafted logits (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from core.inference.qa import best_answer_spans

CONTEXT = "Paris is the capital of France."
# tokens: [CLS] what ? [SEP] paris is the capital of france . [SEP]
OFFSETS = [(0, 0), (0, 4), (4, 5), (0, 0), (0, 5), (6, 8), (9, 12), (13, 20), (21, 23), (24, 30), (30, 31), (0, 0)]
SEQ_IDS = [None, 0, 0, None, 1, 1, 1, 1, 1, 1, 1, None]


def logits(**positions) -> np.ndarray:
    x = np.full(len(SEQ_IDS), -5.0)
    for index, value in positions.items():
        x[int(index[1:])] = value
    return x


def test_best_span_text_from_char_offsets():
    start, end = logits(p4=3.0, p9=1.0), logits(p4=2.0, p9=4.0)
    result = best_answer_spans([start], [end], [OFFSETS], [SEQ_IDS], CONTEXT, top_k=2)
    best = result.spans[0]
    assert (best.text, best.start, best.end) == ("Paris is the capital of France", 0, 30)
    assert best.score == pytest.approx(3.0 + 4.0)
    assert result.answer == best.text
    assert [s.score for s in result.spans] == sorted((s.score for s in result.spans), reverse=True)


def test_question_tokens_end_before_start_and_max_len_are_excluded():
    # highest logits on the question tokens: never an answer
    start, end = logits(p1=9.0, p7=2.0, p9=1.0), logits(p1=9.0, p4=5.0, p7=1.0)
    result = best_answer_spans([start], [end], [OFFSETS], [SEQ_IDS], CONTEXT, top_k=5)
    for span in result.spans:
        assert span.start >= 0 and span.end > span.start
        assert span.text in CONTEXT
    # end (p4) before start (p7) is not allowed: best is capital..capital (p7, p7)
    assert result.spans[0].text == "capital"
    short = best_answer_spans([logits(p4=5.0)], [logits(p10=5.0)], [OFFSETS], [SEQ_IDS], CONTEXT, max_answer_len=2)
    assert all(len(s.text.split()) <= 2 for s in short.spans)


def test_probability_is_softmax_product_over_context_and_cls():
    start, end = logits(p5=2.0), logits(p6=1.0)
    result = best_answer_spans([start], [end], [OFFSETS], [SEQ_IDS], CONTEXT)
    keep = [0] + [i for i, s in enumerate(SEQ_IDS) if s == 1]
    ps = np.exp(start[keep]) / np.exp(start[keep]).sum()
    pe = np.exp(end[keep]) / np.exp(end[keep]).sum()
    assert result.spans[0].text == "is the"
    assert result.spans[0].probability == pytest.approx(ps[keep.index(5)] * pe[keep.index(6)])


def test_best_over_windows_and_padding_cut():
    weak = (logits(p4=1.0), logits(p4=1.0))
    strong = (np.concatenate([logits(p9=6.0), [50.0, 50.0]]), np.concatenate([logits(p9=6.0), [50.0, 50.0]]))
    result = best_answer_spans(
        [weak[0], strong[0]], [weak[1], strong[1]], [OFFSETS, OFFSETS], [SEQ_IDS, SEQ_IDS], CONTEXT, top_k=3
    )
    assert result.spans[0].text == "France" and result.spans[0].window == 1
    assert len({(s.start, s.end) for s in result.spans}) == len(result.spans)  # no duplicate spans


def test_null_answer_threshold():
    start, end = logits(p0=4.0, p4=1.0), logits(p0=4.0, p4=1.0)
    v1 = best_answer_spans([start], [end], [OFFSETS], [SEQ_IDS], CONTEXT)
    assert v1.answer == "Paris" and not v1.is_impossible
    v2 = best_answer_spans([start], [end], [OFFSETS], [SEQ_IDS], CONTEXT, null_threshold=0.0)
    assert v2.is_impossible and v2.answer == "" and v2.null_score == pytest.approx(8.0)
    lenient = best_answer_spans([start], [end], [OFFSETS], [SEQ_IDS], CONTEXT, null_threshold=10.0)
    assert lenient.answer == "Paris"


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="one entry per window"):
        best_answer_spans([logits()], [], [OFFSETS], [SEQ_IDS], CONTEXT)
