"""Tiny fine-tuned teachers (4 layers, 32 wide) for the distillation tests, one per task, built once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/training: finetune_data

from finetune_data import make_tiny_model, ner_sentences, write_conll, write_squad, write_sst2_tsv  # noqa: E402

FAST = ["--lr", "3e-3", "--batch-size", "8", "--warmup", "0.1", "--threads", "1"]
NER_WINDOWS = ["--max-seq-len", "16", "--doc-stride", "4"]
QA_WINDOWS = ["--max-seq-len", "48", "--doc-stride", "16", "--max-query-len", "16"]


def make_base_model(directory: Path, layers: int = 4) -> Path:
    """A random BERT (no dropout, so runs compare exactly) with the test vocabulary."""
    return make_tiny_model(directory, layers)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distill-data")
    write_sst2_tsv(root / "sst2-train.tsv", 32, 0)
    write_sst2_tsv(root / "sst2-dev.tsv", 12, 1)
    write_conll(root / "ner-train.txt", ner_sentences(16, 0, long_every=5))
    write_conll(root / "ner-dev.txt", ner_sentences(6, 1, long_every=4))
    write_squad(root / "qa-train.json", 12, 0)
    write_squad(root / "qa-dev.json", 6, 1)
    return root


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    return make_base_model(tmp_path_factory.mktemp("base") / "model")


def _finetune(task: str, base: Path, train: Path, out: Path, extra=()) -> Path:
    from training.finetune.cli import main as finetune_main

    args = [task, "--model", str(base), "--train", str(train), "--out", str(out), "--epochs", "1", *FAST, *extra]
    assert finetune_main(args) == 0
    return out


@pytest.fixture(scope="session")
def classify_teacher(tmp_path_factory, base_dir, data_dir) -> Path:
    return _finetune("classify", base_dir, data_dir / "sst2-train.tsv", tmp_path_factory.mktemp("t") / "cls")


@pytest.fixture(scope="session")
def ner_teacher(tmp_path_factory, base_dir, data_dir) -> Path:
    out = tmp_path_factory.mktemp("t") / "ner"
    return _finetune("ner", base_dir, data_dir / "ner-train.txt", out, NER_WINDOWS)


@pytest.fixture(scope="session")
def qa_teacher(tmp_path_factory, base_dir, data_dir) -> Path:
    out = tmp_path_factory.mktemp("t") / "qa"
    return _finetune("qa", base_dir, data_dir / "qa-train.json", out, QA_WINDOWS)
