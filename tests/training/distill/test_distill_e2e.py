"""End to end on tiny teachers: `bert distill` for each task -> an ordinary fine-tuned model directory."""

from __future__ import annotations

import json
import time

import pytest
from conftest import FAST, NER_WINDOWS, QA_WINDOWS

from training.distill.cli import main as distill_main


def _distill(task, teacher, train, out, *extra, dev=None) -> dict:
    args = [task, "--teacher", str(teacher), "--train", str(train), "--out", str(out), "--epochs", "1", *FAST]
    if dev is not None:
        args += ["--eval", str(dev)]
    assert distill_main(args + list(extra)) == 0
    return json.loads((out / "distill.json").read_text())


def test_classify_distils_into_a_model_directory_that_loads_everywhere(classify_teacher, data_dir, tmp_path):
    out = tmp_path / "student"
    started = time.perf_counter()
    record = _distill(
        "classify", classify_teacher, data_dir / "sst2-train.tsv", out, "--student-layers", "2",
        dev=data_dir / "sst2-dev.tsv",
    )  # fmt: skip
    print(f"tiny classify distillation: {time.perf_counter() - started:.1f} s")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "task.json", "metrics.json"):
        assert (out / name).exists(), name
    task = json.loads((out / "task.json").read_text())
    assert task["task"] == "sequence-classification" and task["labels"] == ["0", "1"] and task["train_file"]
    assert record["student"]["layers"] == 2 and record["student"]["hidden_size"] == 32
    assert record["student"]["initialisation"] == {"from": "teacher", "layer_map": [1, 3]}
    assert record["student"]["parameters"] < record["teacher"]["parameters"]
    assert record["teacher"]["weights_sha256"] and record["teacher"]["path"]
    assert record["losses"] == {
        "temperature": 2.0, "alpha": 0.5, "hidden_weight": 0.0, "attention_weight": 0.0, "layer_map": [1, 3]
    }  # fmt: skip
    assert record["teacher_cache"]["used"] and record["teacher_cache"]["key"]
    assert record["unlabeled_examples"] == 0
    assert "accuracy" in record["teacher_eval"] and "accuracy" in record["student_eval"]

    from model import load_pretrained

    assert load_pretrained(out, head="sequence-classification").config.num_hidden_layers == 2
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert hf.config.num_hidden_layers == 2 and hf.config.id2label == {0: "0", 1: "1"}


def test_ner_distils_with_intermediate_layer_losses(ner_teacher, data_dir, tmp_path):
    out = tmp_path / "student"
    record = _distill(
        "ner", ner_teacher, data_dir / "ner-train.txt", out, *NER_WINDOWS,
        "--student-config", "tiny", "--hidden-weight", "1", "--attention-weight", "1",
        dev=data_dir / "ner-dev.txt",
    )  # fmt: skip
    assert record["student"]["hidden_size"] == 128 and record["student"]["initialisation"]["from"] == "random"
    assert record["losses"]["layer_map"] == [1, 3] and "f1" in record["student_eval"]
    task = json.loads((out / "task.json").read_text())
    assert task["labels"] == json.loads((ner_teacher / "task.json").read_text())["labels"]


def test_qa_distils_without_a_cache(qa_teacher, data_dir, tmp_path):
    out = tmp_path / "student"
    record = _distill(
        "qa", qa_teacher, data_dir / "qa-train.json", out, *QA_WINDOWS, "--student-layers", "1", "--no-cache",
        dev=data_dir / "qa-dev.json",
    )  # fmt: skip
    assert record["teacher_cache"]["used"] is False and not (out / "teacher-cache").exists()
    assert record["student"]["initialisation"]["layer_map"] == [3] and "f1" in record["student_eval"]


def test_unlabeled_texts_join_training_with_the_kd_loss_only(classify_teacher, data_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("the film was good\n\nthe plot was awful\na really nice movie\n")
    out = tmp_path / "student"
    record = _distill(
        "classify", classify_teacher, data_dir / "sst2-train.tsv", out, "--student-layers", "1",
        "--unlabeled", str(texts), "--alpha", "0.3",
    )  # fmt: skip
    assert record["unlabeled_examples"] == 3 and record["losses"]["alpha"] == 0.3
    assert json.loads((out / "metrics.json").read_text())["unlabeled_examples"] == 3
