"""Helpers for the pretraining tests: a generated English-like corpus, a WordPiece vocabulary
trained on it, and prepared data built with the real `build_pretraining_data`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

SUBJECTS = ["the farmer", "a young woman", "the old doctor", "my brother", "the captain", "her mother", "the teacher"]
VERBS = ["walked to", "looked at", "talked about", "wrote to", "thought of", "waited for", "laughed at"]
OBJECTS = ["the village", "the river", "a letter", "the small house", "the garden", "the market", "the ship"]
TIMES = ["in the morning", "after dinner", "on monday", "before the storm", "at night", "during the winter"]
MAX_PREDICTIONS = 8  # masked tokens per instance at most, in the data build_data prepares
TOPICS = {
    "farm": ["the cows were hungry", "the wheat grew tall", "rain fell on the fields", "the barn needed paint"],
    "sea": ["the waves were high", "the sailors sang loudly", "the wind filled the sails", "fish swam below"],
    "school": ["the children read books", "the bell rang twice", "lessons began early", "the chalk was dusty"],
}


def generate_corpus(path: Path, documents: int = 60, seed: int = 0) -> Path:
    """BERT-format text (a sentence per line, a blank line after each document) with learnable structure:
    each document keeps to one topic, so consecutive sentences are related (NSP) and words predictable (MLM)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(documents):
        topic = rng.choice(sorted(TOPICS))
        for _ in range(rng.randint(6, 12)):
            if rng.random() < 0.5:
                sentence = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TIMES)}"
            else:
                sentence = f"{rng.choice(TOPICS[topic])} {rng.choice(TIMES)}"
            lines.append(sentence[0].upper() + sentence[1:] + ".")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train_tokenizer(corpus: Path, out: Path, vocab_size: int = 200) -> Path:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    from model.tokenizer import BertTokenizer

    backend = Tokenizer(WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    backend.train([str(corpus)], trainer)
    BertTokenizer.from_vocab(backend.get_vocab()).save(out)
    return out


def build_data(root: Path, documents: int = 60, seed: int = 0, max_seq_len: int = 48) -> tuple[Path, Path]:
    """(train data dir, held-out data dir) built from generated text with the real builder."""
    from training.pretraining_build import build_pretraining_data

    root.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(generate_corpus(root / "all.txt", documents + 10, seed), root / "tok")
    train_text = generate_corpus(root / "train.txt", documents, seed + 1)
    heldout_text = generate_corpus(root / "heldout.txt", 10, seed + 2)
    common = dict(max_seq_len=max_seq_len, max_predictions=MAX_PREDICTIONS, progress=False, log=lambda _: None)
    build_pretraining_data([train_text], tok, root / "train", dynamic_masking=True, **common)
    build_pretraining_data([heldout_text], tok, root / "heldout", dupe_factor=1, **common)
    return root / "train", root / "heldout"


def write_config(path: Path, vocab_size: int, dropout: float = 0.1, hidden: int = 32) -> Path:
    """A tiny model config.json (2 layers)."""
    from model import BertConfig

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    path.write_text(json.dumps(config.to_hf_dict()), encoding="utf-8")
    return path


def read_metrics(run_dir: Path, split: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.fixture(autouse=True)
def one_thread():
    """Autouse in the modules that import it."""
    # Tiny ops on a shared 2-core machine run fastest (and reproducibly) on one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
