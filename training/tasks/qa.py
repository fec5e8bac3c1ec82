"""Extractive question answering data: SQuAD v1.1 / v2.0 JSON, or JSONL of the same questions.

Features: [CLS] question [SEP] context-window [SEP], the question cut to `max_query_len`
tokens, the context cut into windows of `max_seq_len` tokens sharing `doc_stride` tokens.
Training targets are the answer's first and last token in the window, or [CLS] (0, 0) when
the answer is not wholly inside the window (or the question has none, v2.0). Windows are made and
answers found by `core.inference.qa` (encode_qa, answer_windows), the same code the service runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.inference.qa import QaWindows, answer_windows, encode_qa
from core.inference.readers import DataError, check_readable, squad_questions
from training.metrics.squad import squad_metrics
from training.tasks.common import Problems


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[str]  # gold answer texts (all of them, for scoring); [] when unanswerable
    answer_start: int  # char offset of the first answer (the training target); -1 when none
    is_impossible: bool
    where: str


def _answer_list(qa: dict) -> list[dict]:
    answers = qa.get("answers") or []
    if isinstance(answers, dict):  # {"text": [...], "answer_start": [...]} (datasets export)
        answers = [
            {"text": t, "answer_start": s} for t, s in zip(answers.get("text", []), answers.get("answer_start", []))
        ]
    return [a for a in answers if isinstance(a, dict)]


@dataclass
class QaTask:
    labels: tuple = ()
    max_seq_len: int = 384
    doc_stride: int = 128  # tokens shared by consecutive context windows
    max_query_len: int = 64  # question tokens kept
    n_best: int = 20  # start/end candidates per window
    max_answer_len: int = 30  # longest answer in tokens
    null_threshold: float = 0.0  # v2.0: answer "" when null score - best span score > this
    version_2: bool = False  # questions may be unanswerable (set when the data says so)

    head = "question-answering"
    main_metric = "f1"

    def read(
        self, path: str | Path, require_labels: bool = True, for_training: bool = True
    ) -> tuple[list[QAExample], Problems]:
        """All questions of a SQuAD JSON (or JSONL) file. With `require_labels`, an answerable
        question without an answer text is reported and left out; `for_training` also requires the
        first answer's answer_start to point at its text (scoring needs only the texts)."""
        path = check_readable(path)
        problems = Problems(str(path))
        examples: list[QAExample] = []
        for where, context, qa in squad_questions(path, problems.add):
            example = self._example(qa, context, where, problems, require_labels, for_training)
            if example is not None:
                examples.append(example)
        if any(e.is_impossible for e in examples):
            self.version_2 = True
        if not examples and not problems:
            raise DataError(f"{path} holds no questions")
        return examples, problems

    def _example(self, qa, context: str, where: str, problems: Problems, require_labels: bool, for_training: bool):
        if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or not qa["question"].strip():
            problems.add(where, "no question text")
            return None
        qid = str(qa.get("id", where))
        where = f"id {qid}"
        answers = _answer_list(qa)
        impossible = bool(qa.get("is_impossible", False))
        texts = [str(a.get("text", "")) for a in answers if str(a.get("text", "")).strip()]
        start = -1
        if require_labels and not impossible and not texts:
            problems.add(where, "no answers (and is_impossible is not set)")
            return None
        if require_labels and for_training and not impossible:
            first = answers[0]
            text = str(first.get("text", ""))
            try:
                start = int(first.get("answer_start"))
            except (TypeError, ValueError):
                problems.add(where, f"answer_start {first.get('answer_start')!r} is not a number")
                return None
            if context[start : start + len(text)] != text:
                found = context[max(start, 0) : max(start, 0) + len(text)]
                problems.add(where, f"answer_start {start} points at {found!r}, not the answer text {text!r}")
                return None
        return QAExample(qid, qa["question"], context, [] if impossible else texts, start, impossible, where)

    # --- features ------------------------------------------------------------------------------

    def windows(self) -> QaWindows:
        return QaWindows(self.max_seq_len, self.doc_stride, self.max_query_len)

    def features(self, examples: list[QAExample], tokenizer) -> list[dict]:
        """The service's own windows (core.inference.qa.encode_qa), with training targets."""
        encoded = encode_qa(tokenizer, [(e.question, e.context) for e in examples], self.windows())
        features = []
        for n, (example, pair_windows) in enumerate(zip(examples, encoded)):
            for window in pair_windows:
                offsets = [tuple(o) if s == 1 else None for o, s in zip(window.offsets, window.sequence_ids)]
                feature = {
                    "input_ids": window.ids,
                    "token_type_ids": window.type_ids,
                    "example_index": n,
                    "window": window,
                }
                if example.answer_start >= 0 or example.is_impossible:
                    feature["start_position"], feature["end_position"] = self._target(example, offsets)
                features.append(feature)
        return features

    @staticmethod
    def _target(example: QAExample, offsets: list) -> tuple[int, int]:
        if example.is_impossible:
            return 0, 0
        start_char = example.answer_start
        end_char = start_char + len(example.answers[0]) if example.answers else start_char
        context_positions = [i for i, o in enumerate(offsets) if o is not None]
        if not context_positions:
            return 0, 0
        first, last = context_positions[0], context_positions[-1]
        if offsets[first][0] > start_char or offsets[last][1] < end_char:
            return 0, 0  # the answer is not wholly in this window
        start = first
        while start <= last and offsets[start][0] <= start_char:
            start += 1
        end = last
        while end >= first and offsets[end][1] >= end_char:
            end -= 1
        return start - 1, end + 1

    def targets(self, features: list[dict]) -> dict[str, np.ndarray]:
        return {
            "start_positions": np.array([f["start_position"] for f in features], dtype=np.int64),
            "end_positions": np.array([f["end_position"] for f in features], dtype=np.int64),
        }

    # --- prediction and scoring ----------------------------------------------------------------

    def predictions(self, examples: list[QAExample], features: list[dict], outputs: list[dict]) -> dict[str, str]:
        by_example: list[list[int]] = [[] for _ in examples]
        for i, feature in enumerate(features):
            by_example[feature["example_index"]].append(i)
        answers = {}
        for example, rows in zip(examples, by_example):
            result = answer_windows(
                [features[i]["window"] for i in rows],
                [outputs[i] for i in rows],
                example.context,
                n_best=self.n_best,
                max_answer_len=self.max_answer_len,
                null_threshold=self.null_threshold if self.version_2 else None,
            )
            answers[example.id] = result.answer
        return answers

    def score(self, examples: list[QAExample], features: list[dict], outputs: list[dict]) -> dict:
        predicted = self.predictions(examples, features, outputs)
        return squad_metrics(predicted, {e.id: e.answers for e in examples})

    def task_info(self) -> dict:
        return {
            "task": self.head,
            "labels": [],
            "problem_type": None,
            "max_seq_len": self.max_seq_len,
            "doc_stride": self.doc_stride,
            "max_query_len": self.max_query_len,
            "n_best": self.n_best,
            "max_answer_len": self.max_answer_len,
            "version_2_with_negative": self.version_2,
            "null_threshold": self.null_threshold,
        }
