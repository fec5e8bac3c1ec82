"""Extractive-QA answer search over the windows of one (question, context) pair. numpy only.

The search follows the reference implementations (Google's run_squad.py, Hugging Face's
run_qa.py): in each window take the `n_best` highest start and end logits, keep pairs whose
tokens both lie in the context, with end >= start and at most `max_answer_len` tokens, and
rank every pair of every window together. The answer text is cut from the original context by
the tokens' character offsets, so spacing and case are the user's.

Two scores per span:
- `score`: start_logit + end_logit. Comparable across windows and examples; SQuAD
  evaluation ranks by it and compares it with the null score for v2.0. Use it for ranking.
- `probability`: softmax of the start logits times softmax of the end logits, the softmax
  taken over the context tokens plus [CLS] (index 0) of all the windows together. With one
  window it is what the Hugging Face question-answering pipeline reports; with several it ranks
  spans exactly as `score` does, so the service's first answer is the one evaluation scores.
  In [0, 1]; the service returns it as the span's score.

Call `best_answer_spans(start_logits, end_logits, offsets, sequence_ids, context)` with one
entry per window (the `Encoding.offsets` / `Encoding.sequence_ids` of that window); logits
longer than the window (a padded batch row) are cut to the window's length.

`encode_qa` makes those windows ([CLS] question [SEP] context-window [SEP], the question cut to
`max_query_len` tokens, windows sharing `doc_stride` tokens) for training, evaluation and the
service alike, and `answer_windows` runs the search over one pair's model outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.batches import ModelInput

MIN_CONTEXT_TOKENS = 8  # a window must leave at least this much room for the context


@dataclass
class AnswerSpan:
    text: str  # context[start:end]
    start: int  # character offset into the context
    end: int  # exclusive character offset
    score: float  # start logit + end logit (ranking, null-answer comparison)
    probability: float  # softmax(start) * softmax(end) over the windows' context and [CLS] (HF pipeline score)
    window: int  # index of the window the span came from


@dataclass
class QAResult:
    spans: list[AnswerSpan]  # best first, by `score`; empty when no valid span exists
    null_score: float  # min over windows of start_logit[CLS] + end_logit[CLS]
    null_probability: float  # max over windows of the [CLS] start prob * end prob
    is_impossible: bool = False  # True when the null answer beat the best span by the threshold
    answer: str = field(default="")  # best span's text, or "" when `is_impossible`


def _log_normaliser(rows: list[np.ndarray], keeps: list[np.ndarray]) -> float:
    """log of the sum of exp(logit) over the kept positions of every window: one softmax over all of them."""
    kept = np.concatenate([row[keep] for row, keep in zip(rows, keeps)])
    top = kept.max()
    return float(top + np.log(np.exp(kept - top).sum()))


def best_answer_spans(
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[Sequence[tuple[int, int] | None]],
    sequence_ids: Sequence[Sequence[int | None]],
    context: str,
    top_k: int = 1,
    n_best: int = 20,
    max_answer_len: int = 30,
    null_threshold: float | None = None,
    context_sequence: int = 1,
) -> QAResult:
    """The `top_k` best answer spans over all windows of one example.

    start_logits / end_logits: one (T,) array per window. offsets / sequence_ids: per window,
    the token's (char start, char end) in its own sequence and its sequence id (0 question,
    1 context, None special). `context_sequence` says which sequence id is the context.
    null_threshold: None for SQuAD v1.1 (always answer); a number for v2.0, where the answer
    is empty when null_score - best_score > null_threshold.
    """
    if not (len(start_logits) == len(end_logits) == len(offsets) == len(sequence_ids)):
        raise ValueError("start_logits, end_logits, offsets and sequence_ids need one entry per window")
    if top_k < 1 or n_best < 1 or max_answer_len < 1:
        raise ValueError("top_k, n_best and max_answer_len must be at least 1")
    windows = []  # (start logits (T,), end logits (T,), in-context mask (T,), offsets)
    for starts, ends, window_offsets, seq_ids in zip(start_logits, end_logits, offsets, sequence_ids):
        length = len(seq_ids)
        in_context = np.array(
            [sid == context_sequence and window_offsets[i] is not None for i, sid in enumerate(seq_ids)], dtype=bool
        )
        windows.append(
            (
                np.asarray(starts, dtype=np.float64)[:length],  # (T,)
                np.asarray(ends, dtype=np.float64)[:length],  # (T,)
                in_context,
                window_offsets,
            )
        )
    if not windows:
        return QAResult(spans=[], null_score=0.0, null_probability=0.0, is_impossible=True)
    # [CLS] takes part in the softmax, as in the HF pipeline; one softmax over every window, so a
    # span's probability ranks it exactly as its score does, whichever window it comes from.
    keeps = [np.concatenate([[True], w[2][1:]]) for w in windows]
    log_z_start = _log_normaliser([w[0] for w in windows], keeps)
    log_z_end = _log_normaliser([w[1] for w in windows], keeps)
    candidates: dict[tuple[int, int], AnswerSpan] = {}
    null_score, null_probability = float("inf"), 0.0
    for window, (starts, ends, in_context, window_offsets) in enumerate(windows):
        null_score = min(null_score, float(starts[0] + ends[0]))
        null_probability = max(null_probability, float(np.exp(starts[0] + ends[0] - log_z_start - log_z_end)))
        if not in_context.any():
            continue
        context_positions = np.flatnonzero(in_context)
        top_starts = context_positions[np.argsort(-starts[context_positions], kind="stable")[:n_best]]
        top_ends = context_positions[np.argsort(-ends[context_positions], kind="stable")[:n_best]]
        for s in top_starts:
            for e in top_ends:
                if e < s or e - s + 1 > max_answer_len:
                    continue
                char_start, char_end = window_offsets[s][0], window_offsets[e][1]
                if char_end <= char_start:
                    continue
                score = float(starts[s] + ends[e])
                key = (char_start, char_end)
                if key in candidates and candidates[key].score >= score:
                    continue
                candidates[key] = AnswerSpan(
                    text=context[char_start:char_end],
                    start=int(char_start),
                    end=int(char_end),
                    score=score,
                    probability=float(np.exp(score - log_z_start - log_z_end)),
                    window=window,
                )
    spans = sorted(candidates.values(), key=lambda span: -span.score)[:top_k]
    if null_score == float("inf"):
        null_score = 0.0
    result = QAResult(spans=spans, null_score=null_score, null_probability=null_probability)
    if not spans:
        result.is_impossible = True
    elif null_threshold is not None and null_score - spans[0].score > null_threshold:
        result.is_impossible = True
    result.answer = "" if result.is_impossible else spans[0].text
    return result


@dataclass(frozen=True)
class QaWindows:
    """How a (question, context) pair is cut into model inputs; the bundle's task_config sets it."""

    max_seq_len: int = 384
    doc_stride: int = 128  # context tokens shared by consecutive windows
    max_query_len: int = 64  # question tokens kept

    @classmethod
    def from_task_config(cls, max_seq_len: int, task_config: dict) -> QaWindows:
        """The windows the model was fine-tuned with; a short model without a record keeps half for the question."""
        query = task_config.get("max_query_len") or min(cls.max_query_len, (max_seq_len - 3) // 2)
        return cls(max_seq_len, int(task_config.get("doc_stride") or cls.doc_stride), int(query))

    def check(self) -> None:
        if self.max_seq_len - self.max_query_len - 3 < MIN_CONTEXT_TOKENS:
            raise ValueError(
                f"max_seq_len {self.max_seq_len} leaves too little room after a {self.max_query_len}-token question"
            )


def cut_question(tokenizer, question: str, max_query_len: int) -> str:
    """The question without leading blanks, cut to `max_query_len` tokens at a token's character end."""
    question = question.lstrip()
    offsets = tokenizer.backend.encode(question, add_special_tokens=False).offsets
    return question[: offsets[max_query_len - 1][1]] if len(offsets) > max_query_len else question


def encode_qa(tokenizer, pairs: Sequence[tuple[str, str]], windows: QaWindows) -> list[list]:
    """Per (question, context) pair, its windows (model.tokenizer Encodings) in context order."""
    windows.check()
    out = []
    for question, context in pairs:
        question = cut_question(tokenizer, question, windows.max_query_len)
        room = windows.max_seq_len - len(tokenizer.backend.encode(question, add_special_tokens=False).ids) - 3
        stride = min(windows.doc_stride, room // 2)
        out.append(tokenizer.encode_windows(question, context, max_length=windows.max_seq_len, stride=stride))
    return out


def model_inputs(encoded: Sequence[list]) -> list[ModelInput]:
    return [ModelInput(w.ids, w.type_ids) for pair_windows in encoded for w in pair_windows]


def answer_windows(pair_windows: list, outputs: Sequence[dict], context: str, top_k: int = 1, **search) -> QAResult:
    """`best_answer_spans` over one pair's windows and their model outputs."""
    return best_answer_spans(
        [o["start_logits"] for o in outputs],
        [o["end_logits"] for o in outputs],
        [w.offsets for w in pair_windows],
        [w.sequence_ids for w in pair_windows],
        context,
        top_k=top_k,
        **search,
    )
