"""Classification metrics: accuracy, macro-F1, binary F1, MCC, confusion matrix (and its PNG).

Macro-F1 averages over the classes seen in the gold labels or the predictions, as scikit-learn
does; binary F1 and MCC are given when the label map has exactly two classes, class 1 positive.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def confusion_matrix(gold: np.ndarray, pred: np.ndarray, num_labels: int) -> np.ndarray:
    """(num_labels, num_labels) counts; rows = gold class, columns = predicted class."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return matrix


def _f1(tp: float, fp: float, fn: float) -> float:
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def mcc(matrix: np.ndarray) -> float:
    """Matthews correlation from a 2x2 confusion matrix; 0 when a margin is empty."""
    (tn, fp), (fn, tp) = matrix.astype(np.float64)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def classification_metrics(gold, pred, labels: list[str]) -> dict:
    """Single-label metrics from class indices. Keys: accuracy, macro_f1, per_class, confusion_matrix,
    and f1 + mcc for two classes."""
    gold, pred = np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if len(gold) == 0:
        raise ValueError("no examples to score")
    matrix = confusion_matrix(gold, pred, len(labels))
    tp = np.diag(matrix).astype(np.float64)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    seen = np.union1d(np.unique(gold), np.unique(pred))
    per_class = {
        labels[i]: {
            "precision": float(tp[i] / (tp[i] + fp[i])) if tp[i] + fp[i] else 0.0,
            "recall": float(tp[i] / (tp[i] + fn[i])) if tp[i] + fn[i] else 0.0,
            "f1": _f1(tp[i], fp[i], fn[i]),
            "support": int(matrix[i].sum()),
        }
        for i in range(len(labels))
    }
    out = {
        "accuracy": float((gold == pred).mean()),
        "macro_f1": float(np.mean([_f1(tp[i], fp[i], fn[i]) for i in seen])),
        "num_examples": int(len(gold)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }
    if len(labels) == 2:
        out["f1"] = _f1(tp[1], fp[1], fn[1])
        out["mcc"] = mcc(matrix)
    return out


def multilabel_metrics(gold: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    """(N, L) 0/1 arrays. Keys: micro_f1, macro_f1, subset_accuracy (exact set match)."""
    gold, pred = np.asarray(gold, dtype=bool), np.asarray(pred, dtype=bool)
    tp = (gold & pred).sum(axis=0).astype(np.float64)
    fp = (~gold & pred).sum(axis=0).astype(np.float64)
    fn = (gold & ~pred).sum(axis=0).astype(np.float64)
    seen = np.flatnonzero(gold.any(axis=0) | pred.any(axis=0))
    return {
        "micro_f1": _f1(tp.sum(), fp.sum(), fn.sum()),
        "macro_f1": float(np.mean([_f1(tp[i], fp[i], fn[i]) for i in seen])) if len(seen) else 0.0,
        "subset_accuracy": float((gold == pred).all(axis=1).mean()),
        "num_examples": int(len(gold)),
        "per_class": {
            labels[i]: {"f1": _f1(tp[i], fp[i], fn[i]), "support": int(gold[:, i].sum())} for i in range(len(labels))
        },
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator else 0.0


def regression_metrics(gold, pred) -> dict:
    gold, pred = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return {
        "mse": float(((gold - pred) ** 2).mean()),
        "pearson": _pearson(gold, pred),
        "spearman": _pearson(_ranks(gold), _ranks(pred)),
        "num_examples": int(len(gold)),
    }


def plot_confusion_matrix(matrix, labels: list[str], path: str | Path, title: str = "confusion matrix") -> Path:
    """Write a PNG heat map with the counts written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
