"""Label mapping, softmax / sigmoid / regression and top_k."""

from __future__ import annotations

import numpy as np
import pytest

from core.inference.classify import classify, label_names, sigmoid, softmax


def test_softmax_sorted_and_top_k():
    out = classify(np.array([1.0, 3.0, 2.0]), ["a", "b", "c"], "single_label_classification")
    assert [o["label"] for o in out] == ["b", "c", "a"]
    assert sum(o["score"] for o in out) == pytest.approx(1.0)
    assert len(classify(np.array([1.0, 3.0, 2.0]), ["a", "b", "c"], None, top_k=1)) == 1


def test_multi_label_uses_independent_sigmoids():
    out = classify(np.array([4.0, 3.0]), ["x", "y"], "multi_label_classification")
    assert out[0]["score"] == pytest.approx(1 / (1 + np.exp(-4.0)))
    assert sum(o["score"] for o in out) > 1.0


def test_regression_returns_raw_value_and_stable_extremes():
    assert classify(np.array([2.5]), None, "regression") == [{"label": "LABEL_0", "score": 2.5}]
    assert np.isfinite(softmax(np.array([1e4, -1e4]))).all()
    assert sigmoid(np.array([-1e4]))[0] == 0.0


def test_label_names_fall_back_to_hf_defaults():
    assert label_names(None, 2) == ["LABEL_0", "LABEL_1"]
    assert label_names(["a"], 2) == ["LABEL_0", "LABEL_1"]
