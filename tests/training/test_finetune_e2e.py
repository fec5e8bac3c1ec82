"""End to end on a tiny random BERT: `bert finetune` -> saved model -> reload -> `bert evaluate`."""

from __future__ import annotations

import json

import pytest
from finetune_data import make_tiny_model, ner_sentences, write_conll, write_squad, write_sst2_tsv

from training.evaluate import main as evaluate_main
from training.finetune.cli import main as finetune_main

FAST = ["--lr", "3e-3", "--batch-size", "8", "--warmup", "0.1", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _evaluate(task: str, model: str, data, out) -> dict:
    assert evaluate_main([task, "--model", str(model), "--data", str(data), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_classify_train_save_reload_evaluate(tiny_dir, tmp_path):
    train, dev, out = (
        write_sst2_tsv(tmp_path / "train.tsv", 64, 0),
        write_sst2_tsv(tmp_path / "dev.tsv", 24, 1),
        tmp_path / "cls",
    )
    args = ["classify", "--model", str(tiny_dir), "--train", str(train), "--eval", str(dev), "--out", str(out)]
    assert finetune_main(args + ["--epochs", "5", *FAST]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "task.json", "metrics.json"):
        assert (out / name).exists(), name
    assert (out / "confusion_matrix.png").exists()
    task = json.loads((out / "task.json").read_text())
    assert task["task"] == "sequence-classification" and task["labels"] == ["0", "1"]
    assert task["problem_type"] == "single_label_classification" and task["max_seq_len"] == 128
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"}
    record = json.loads((out / "metrics.json").read_text())
    assert record["best"]["accuracy"] >= 0.9  # the label is one sentiment word: easy to learn
    again = _evaluate("classify", out, dev, tmp_path / "eval.json")
    assert again["accuracy"] == pytest.approx(record["best"]["accuracy"])
    assert (tmp_path / "eval.png").exists()

    # the exported ONNX bundle scores the same through the bundle predictor
    pytest.importorskip("onnxruntime")
    from training.export.exporter import export_bundle

    bundle = export_bundle(out, tmp_path / "bundle", precision="fp32")
    from_bundle = _evaluate("classify", bundle, dev, tmp_path / "bundle.json")
    assert from_bundle["runtime"].startswith("bundle")
    assert from_bundle["accuracy"] == pytest.approx(again["accuracy"])
    assert from_bundle["confusion_matrix"] == again["confusion_matrix"]


def test_ner_iob1_windows_train_save_reload_evaluate(tiny_dir, tmp_path):
    train = write_conll(tmp_path / "train.txt", ner_sentences(40, 0, long_every=5))
    valid = write_conll(tmp_path / "valid.txt", ner_sentences(12, 1, long_every=4))
    out = tmp_path / "ner"
    args = ["ner", "--model", str(tiny_dir), "--train", str(train), "--eval", str(valid), "--out", str(out)]
    assert finetune_main(args + ["--epochs", "4", "--max-seq-len", "16", "--doc-stride", "4", *FAST]) == 0
    task = json.loads((out / "task.json").read_text())
    assert task["labels"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert task["label_all_subtokens"] is False and task["max_seq_len"] == 16
    record = json.loads((out / "metrics.json").read_text())
    assert record["best"]["f1"] > 0.5
    again = _evaluate("ner", out, valid, tmp_path / "eval.json")
    assert again["f1"] == pytest.approx(record["best"]["f1"])
    assert set(again["per_type"]) <= {"PER", "LOC", "ORG"}


def test_qa_train_save_reload_evaluate(tiny_dir, tmp_path):
    train, dev, out = (
        write_squad(tmp_path / "train.json", 40, 0),
        write_squad(tmp_path / "dev.json", 12, 1),
        tmp_path / "qa",
    )
    args = ["qa", "--model", str(tiny_dir), "--train", str(train), "--eval", str(dev), "--out", str(out)]
    assert (
        finetune_main(
            args + ["--epochs", "3", "--max-seq-len", "32", "--doc-stride", "8", "--max-query-len", "12", *FAST]
        )
        == 0
    )
    task = json.loads((out / "task.json").read_text())
    assert (task["task"], task["max_seq_len"], task["doc_stride"], task["max_query_len"]) == (
        "question-answering",
        32,
        8,
        12,
    )
    record = json.loads((out / "metrics.json").read_text())
    again = _evaluate("qa", out, dev, tmp_path / "eval.json")
    assert again["f1"] == pytest.approx(record["best"]["f1"])
    assert again["num_questions"] == 12


def test_bad_data_gives_one_line_and_exit_2(tiny_dir, tmp_path, capsys):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    code = finetune_main(["classify", "--model", str(tiny_dir), "--train", str(empty), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"bert finetune: error: {empty} is empty"
    train = write_sst2_tsv(tmp_path / "train.tsv", 16, 0)
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\ngood movie\t1\nodd movie\tmaybe\n")
    args = [
        "classify",
        "--model",
        str(tiny_dir),
        "--train",
        str(train),
        "--eval",
        str(dev),
        "--out",
        str(tmp_path / "o"),
    ]
    assert finetune_main(args + ["--strict", "--epochs", "1"]) == 2
    assert "dev.tsv:line 3: label 'maybe' is not in the label map" in capsys.readouterr().err
    assert evaluate_main(["ner", "--model", str(tmp_path / "missing"), "--data", str(train)]) == 2


def test_bf16_grad_accum_and_early_stopping_run(tiny_dir, tmp_path):
    train, dev, out = (
        write_sst2_tsv(tmp_path / "t.tsv", 16, 0),
        write_sst2_tsv(tmp_path / "d.tsv", 8, 1),
        tmp_path / "o",
    )
    args = ["classify", "--model", str(tiny_dir), "--train", str(train), "--eval", str(dev), "--out", str(out)]
    options = ["--precision", "bf16", "--grad-accum", "2", "--epochs", "6", "--early-stopping", "1", "--lr", "1e-9"]
    assert finetune_main(args + options + ["--batch-size", "4", "--threads", "1"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    # lr 1e-9 changes nothing, so epoch 2 is no better than epoch 1 and training stops there
    assert [h["epoch"] for h in record["history"]] == [1, 2] and record["best_epoch"] == 1
    assert record["settings"]["precision"] == "bf16"
