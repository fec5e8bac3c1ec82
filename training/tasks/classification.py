"""Text classification data: CSV / TSV with a header (GLUE style) or JSONL, one or two text columns.

Problem types: single-label (one class per row, softmax), multi-label (a JSON list, or labels
joined by `label_separator` in CSV/TSV; sigmoid) and regression (a number; one output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.inference.classify import encode_classify
from core.inference.readers import PAIR_COLUMNS, TEXT_COLUMNS, DataError, check_readable, pick_column, table_rows
from training.metrics.classification import classification_metrics, multilabel_metrics, regression_metrics
from training.tasks.common import Problems

SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
MAIN_METRIC = {SINGLE: "accuracy", MULTI: "micro_f1", REGRESSION: "pearson"}


@dataclass
class Example:
    text: str
    text_pair: str | None
    label: object  # raw: str (single), list[str] (multi), float (regression), None when unlabelled
    where: str  # "line N", for messages


@dataclass
class ClassificationTask:
    labels: list[str] = field(default_factory=list)  # output order; empty = taken from the training file
    problem_type: str = SINGLE
    max_seq_len: int = 128
    text_column: str | None = None  # None = first of TEXT_COLUMNS present
    text_pair_column: str | None = None  # None = first of PAIR_COLUMNS present, if any
    label_column: str = "label"
    label_separator: str = ","  # multi-label in CSV/TSV: "sports,politics"

    head = "sequence-classification"

    @property
    def main_metric(self) -> str:
        return MAIN_METRIC[self.problem_type]

    # --- reading -------------------------------------------------------------------------------

    def read(
        self, path: str | Path, require_labels: bool = True, for_training: bool = True
    ) -> tuple[list[Example], Problems]:
        path = check_readable(path)
        problems = Problems(str(path))
        examples: list[Example] = []
        text_col = pair_col = None
        for number, row in table_rows(path):
            if text_col is None:
                text_col = pick_column(row, self.text_column, TEXT_COLUMNS, path, "text", True)
                pair_col = pick_column(row, self.text_pair_column, PAIR_COLUMNS, path, "second text", False)
                if require_labels and self.label_column not in row:
                    raise DataError(f"{path}: no label column {self.label_column!r}; columns are {sorted(row)}")
            text = row.get(text_col)
            if not isinstance(text, str) or not text.strip():
                problems.add(f"line {number}", f"empty or missing text in column {text_col!r}")
                continue
            pair = row.get(pair_col) if pair_col else None
            label = row.get(self.label_column)
            if require_labels:
                try:
                    label = self._parse_label(label)
                except ValueError as err:
                    problems.add(f"line {number}", str(err))
                    continue
            examples.append(Example(text, pair if isinstance(pair, str) else None, label, f"line {number}"))
        if not examples and not problems:
            raise DataError(f"{path} holds a header but no examples")
        return examples, problems

    def _parse_label(self, raw):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise ValueError("missing label")
        if self.problem_type == REGRESSION:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"label {raw!r} is not a number (regression)") from None
            if not math.isfinite(value):
                raise ValueError(f"label {raw!r} is not a finite number")
            return value
        if self.problem_type == MULTI:
            items = raw if isinstance(raw, list) else str(raw).split(self.label_separator)
            return sorted({str(x).strip() for x in items if str(x).strip()})
        if isinstance(raw, list):
            raise ValueError(f"label {raw!r} is a list; pass --problem-type multi_label_classification")
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        return str(raw).strip()

    def infer_labels(self, examples: list[Example]) -> list[str]:
        """Sorted label names (numerically when they are all integers) from training examples."""
        if self.problem_type == REGRESSION:
            return ["score"]
        names = {x for e in examples for x in (e.label if isinstance(e.label, list) else [e.label])}
        if all(n.lstrip("-").isdigit() for n in names):
            return sorted(names, key=int)
        return sorted(names)

    def drop_unknown_labels(self, examples: list[Example], problems: Problems) -> list[Example]:
        """Examples whose label is not in the label map are counted in `problems` and left out."""
        if self.problem_type == REGRESSION:
            return examples
        known = set(self.labels)
        kept = []
        for example in examples:
            names = example.label if isinstance(example.label, list) else [example.label]
            unknown = [n for n in names if n not in known]
            if unknown:
                problems.add(example.where, f"label {unknown[0]!r} is not in the label map {self.labels}")
            else:
                kept.append(example)
        return kept

    # --- features ------------------------------------------------------------------------------

    def features(self, examples: list[Example], tokenizer) -> list[dict]:
        """One feature per example: ids and type ids cut to max_seq_len (longest text first), target."""
        texts = [(e.text, e.text_pair) if e.text_pair is not None else e.text for e in examples]
        encodings, _ = encode_classify(tokenizer, texts, self.max_seq_len)
        index = {name: i for i, name in enumerate(self.labels)}
        features = []
        for i, (example, enc) in enumerate(zip(examples, encodings)):
            feature = {"input_ids": enc.ids, "token_type_ids": enc.type_ids, "example_index": i}
            if example.label is not None:
                feature["label"] = self._target(example.label, index)
            features.append(feature)
        return features

    def _target(self, label, index: dict[str, int]):
        if self.problem_type == REGRESSION:
            return float(label)
        if self.problem_type == MULTI:
            target = [0.0] * len(self.labels)
            for name in label:
                target[index[name]] = 1.0
            return target
        return index[label]

    def targets(self, features: list[dict]) -> dict[str, np.ndarray]:
        dtype = np.int64 if self.problem_type == SINGLE else np.float32
        return {"labels": np.array([f["label"] for f in features], dtype=dtype)}

    # --- scoring -------------------------------------------------------------------------------

    def predict(self, logits: np.ndarray):
        """(N, L) logits -> class indices (single), 0/1 matrix (multi) or values (regression)."""
        if self.problem_type == SINGLE:
            return logits.argmax(axis=-1)
        if self.problem_type == MULTI:
            return (logits > 0).astype(np.int64)  # sigmoid > 0.5
        return logits[:, 0]

    def predictions(self, examples: list[Example], features: list[dict], outputs: list[dict]) -> list:
        """Per example: the label name (single), the list of names (multi) or the value (regression)."""
        predicted = self.predict(np.stack([o["logits"] for o in outputs]))  # (N,) or (N, L)
        if self.problem_type == SINGLE:
            return [self.labels[int(i)] for i in predicted]
        if self.problem_type == MULTI:
            return [[self.labels[j] for j in np.flatnonzero(row)] for row in predicted]
        return [float(v) for v in predicted]

    def score(self, examples: list[Example], features: list[dict], outputs: list[dict]) -> dict:
        logits = np.stack([o["logits"] for o in outputs])  # (N, L)
        predicted = self.predict(logits)
        if self.problem_type == REGRESSION:
            return regression_metrics([f["label"] for f in features], predicted)
        if self.problem_type == MULTI:
            return multilabel_metrics(np.array([f["label"] for f in features]), predicted, self.labels)
        return classification_metrics([f["label"] for f in features], predicted, self.labels)

    def task_info(self) -> dict:
        return {
            "task": self.head,
            "labels": list(self.labels),
            "problem_type": self.problem_type,
            "max_seq_len": self.max_seq_len,
            "text_column": self.text_column,
            "text_pair_column": self.text_pair_column,
            "label_column": self.label_column,
        }
