"""Task metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics.classification import (
    classification_metrics,
    multilabel_metrics,
    plot_confusion_matrix,
    regression_metrics,
)
from training.metrics.ner import entity_metrics, get_entities
from training.metrics.squad import exact_match_score, f1_score, normalize_answer, squad_metrics


def test_get_entities_iob2_iob1_and_bioes():
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # IOB1 / sloppy IOB2: an I- after O or after another type opens an entity (conlleval reading)
    assert get_entities(["I-PER", "I-PER", "I-LOC", "O", "I-ORG"]) == [("PER", 0, 1), ("LOC", 2, 2), ("ORG", 4, 4)]
    assert get_entities(["B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]
    assert get_entities(["S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]) == [("PER", 0, 0), ("LOC", 1, 3), ("LOC", 4, 4)]


def test_entity_f1_partial_match_is_wrong():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-MISC"]]
    m = entity_metrics(gold, pred)
    # gold: PER(0-1), LOC, ORG = 3; predicted: PER(0-0), LOC, ORG, MISC = 4; correct: LOC, ORG = 2
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["per_type"]["PER"]["f1"] == 0.0
    assert m["per_type"]["LOC"]["f1"] == 1.0
    assert m["per_type"]["MISC"]["precision"] == 0.0 and m["per_type"]["MISC"]["support"] == 0
    assert m["token_accuracy"] == pytest.approx(4 / 6)


def test_entity_f1_type_error_and_length_check():
    m = entity_metrics([["B-PER", "I-PER"]], [["B-LOC", "I-LOC"]])
    assert m["f1"] == 0.0 and m["num_gold_entities"] == 1 and m["num_predicted_entities"] == 1
    with pytest.raises(ValueError, match="sequence 0"):
        entity_metrics([["O", "O"]], [["O"]])


def test_classification_binary_hand_computed(tmp_path):
    gold, pred = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    m = classification_metrics(gold, pred, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 / 3)  # tp 2, fp 1, fn 1
    assert m["mcc"] == pytest.approx((2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2))
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    png = plot_confusion_matrix(m["confusion_matrix"], ["neg", "pos"], tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_classification_macro_over_seen_classes_only():
    m = classification_metrics([0, 1, 1], [0, 1, 0], ["a", "b", "c"])
    assert "f1" not in m and "mcc" not in m  # three classes
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)  # class c never seen


def test_multilabel_and_regression():
    gold = np.array([[1, 0, 1], [0, 1, 0]])
    pred = np.array([[1, 0, 0], [0, 1, 0]])
    m = multilabel_metrics(gold, pred, ["a", "b", "c"])
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert m["subset_accuracy"] == 0.5
    r = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert r["mse"] == pytest.approx(1 / 3)
    assert r["spearman"] == pytest.approx(1.0)


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert exact_match_score("the Eiffel Tower.", "Eiffel tower") == 1.0
    # pred {cat, sat}, gold {cat, sat, down}: P 1, R 2/3
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert f1_score("dog", "cat") == 0.0
    m = squad_metrics(
        {"q1": "Denver Broncos", "q2": "in 1990"},
        {"q1": ["Broncos", "Denver Broncos"], "q2": ["1991", "the year 1990"]},
    )
    # q1: EM 1, F1 1. q2: EM 0; F1 vs "1991" 0, vs "year 1990": {in,1990} & {year,1990} -> P 1/2 R 1/2
    assert m["exact_match"] == pytest.approx(50.0)
    assert m["f1"] == pytest.approx(100 * (1 + 0.5) / 2)


def test_squad_v2_unanswerable():
    m = squad_metrics({"a": "", "b": "x"}, {"a": [], "b": []})
    assert m["exact_match"] == pytest.approx(50.0)
    assert m["no_answer_count"] == 2
