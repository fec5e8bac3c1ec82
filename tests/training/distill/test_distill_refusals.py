"""What `bert distill` refuses: one line naming the problem, exit code 2, nothing trained."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import FAST, make_base_model

from training.distill.cli import main as distill_main


def _refused(capsys, argv) -> str:
    assert distill_main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("bert distill: error: ")
    return lines[-1]


@pytest.fixture
def classify_args(classify_teacher, data_dir, tmp_path):
    def args(task="classify", teacher=classify_teacher, train=data_dir / "sst2-train.tsv"):
        return [task, "--teacher", str(teacher), "--train", str(train), "--out", str(tmp_path / "out"), *FAST]

    return args


def test_a_teacher_that_is_not_fine_tuned(capsys, classify_args, base_dir):
    line = _refused(capsys, classify_args(teacher=base_dir) + ["--student-layers", "2"])
    assert "not a fine-tuned model (no task.json)" in line


def test_a_teacher_of_another_task(capsys, classify_args, data_dir):
    line = _refused(capsys, classify_args(task="ner", train=data_dir / "ner-train.txt") + ["--student-layers", "2"])
    assert "is a sequence-classification model" in line and "needs a token-classification teacher" in line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--student-layers", "2", "--layer-map", "0,4"], "layer 4 is out of range"),
        (["--student-layers", "2", "--layer-map", "0,1,2"], "names 3 layers but the student has 2"),
        (["--student-layers", "2", "--labels", "1", "0"], "differ from the teacher's labels"),
        (["--student-layers", "2", "--student-config", "tiny"], "give one of --student-layers"),
        ([], "give one of --student-layers"),
    ],
)
def test_bad_student_or_label_options(capsys, classify_args, extra, message):
    assert message in _refused(capsys, classify_args() + extra)


def test_unlabeled_texts_are_for_classification_only(capsys, classify_args, data_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a good film\n")
    argv = classify_args(task="ner", train=data_dir / "ner-train.txt") + ["--student-layers", "1"]
    assert "--unlabeled works for classify only" in _refused(capsys, argv + ["--unlabeled", str(texts)])


def test_a_student_init_with_another_vocabulary(capsys, classify_args, tmp_path):
    other = make_base_model(tmp_path / "other", layers=2)
    vocab = (other / "vocab.txt").read_text().splitlines()
    (other / "vocab.txt").write_text("\n".join(vocab[:5] + vocab[6:] + vocab[5:6]) + "\n")  # same size, other order
    (other / "tokenizer.json").unlink()
    argv = classify_args() + ["--student-config", str(other / "config.json"), "--student-init", str(other)]
    assert "its vocabulary file differs from the teacher's" in _refused(capsys, argv)

    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 1}))
    assert "the student must share the teacher's vocabulary" in _refused(capsys, argv)


def test_a_student_init_fine_tuned_on_other_labels(capsys, classify_args, ner_teacher, tmp_path):
    init = shutil.copytree(ner_teacher, tmp_path / "init")
    argv = classify_args() + ["--student-config", str(init / "config.json"), "--student-init", str(init)]
    assert "is fine-tuned on labels" in _refused(capsys, argv)
