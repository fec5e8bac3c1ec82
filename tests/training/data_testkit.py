"""Helpers for tokenizer and pretraining-data tests: a tiny WordPiece vocabulary and generated corpora.

Import the fixtures into a test module with `from tests.training.data_testkit import ...`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from model.tokenizer import SPECIAL_TOKENS, BertTokenizer

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "red", "run", "walk", "tree", "house", "blue"]
PIECES = ["un", "##believ", "##able", "re", "##do", "##ing", "##s", "##ed"]
MULTI_PIECE = ["unbelievable", "redoing", "cats", "walked", "runs", "trees"]  # each 2+ pieces


@pytest.fixture
def tiny_tokenizer_dir(tmp_path: Path) -> Path:
    """A saved tiny uncased tokenizer (vocab.txt + tokenizer.json)."""
    tokens = [*SPECIAL_TOKENS, *".,!?", *WORDS, *PIECES]
    tokens += [c for c in "abcdefghijklmnopqrstuvwxyz"] + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    directory = tmp_path / "tokenizer"
    BertTokenizer.from_vocab(vocab, lowercase=True).save(directory)
    return directory


def make_corpus(path: Path, documents: int, seed: int = 0, sentences=(1, 12), words=(1, 14), long_every=0) -> Path:
    """A BERT-format corpus of random sentences; every `long_every`-th sentence is very long."""
    rng = random.Random(seed)
    vocab = WORDS + MULTI_PIECE
    lines = []
    count = 0
    for _ in range(documents):
        for _ in range(rng.randint(*sentences)):
            count += 1
            n = 80 if long_every and count % long_every == 0 else rng.randint(*words)
            lines.append(" ".join(rng.choice(vocab) for _ in range(n)).capitalize() + rng.choice(".!?"))
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus.txt", documents=40)
