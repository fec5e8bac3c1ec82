"""Tiny generated models and data for the fine-tuning tests (imported by the test modules)."""

from __future__ import annotations

import json
import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "nice", "superb"]
NEGATIVE = ["bad", "awful", "poor", "terrible", "dull"]
FILLER = ["the", "movie", "film", "plot", "acting", "was", "is", "really", "quite", "a", "and", "very"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank"]
CITIES = ["paris", "berlin", "rome", "madrid", "amsterdam", "lisbon"]  # amsterdam = am ##ster ##dam
ORGS = ["acme", "globex", "initech", "umbrella"]
VERBS = ["lives", "works", "stays", "sleeps"]
PIECES = ["am", "##ster", "##dam", "##s", "##ing"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    words = POSITIVE + NEGATIVE + FILLER + PEOPLE + CITIES[:4] + CITIES[5:] + ORGS + VERBS
    words += ["in", "at", "for", "where", "does", "who", "what", "company", "city", "?", ".", ",", "with"]
    return SPECIALS + sorted(set(words)) + PIECES


def make_tiny_model(directory: Path, layers: int = 2) -> Path:
    """A random BERT (32 wide, `layers` deep, no dropout) with its tokenizer in HF layout."""
    import torch

    from model import BertConfig, build_model, save_pretrained
    from model.tokenizer import BertTokenizer

    vocab = {token: i for i, token in enumerate(vocabulary())}
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    save_pretrained(build_model(config), directory)
    BertTokenizer.from_vocab(vocab, lowercase=True).save(directory)
    return directory


def classification_rows(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        positive = i % 2 == 0
        word = rng.choice(POSITIVE if positive else NEGATIVE)
        words = rng.sample(FILLER, 3) + [word] + rng.sample(FILLER, rng.randint(0, 3))
        rows.append((" ".join(words), "1" if positive else "0"))
    return rows


def write_sst2_tsv(path: Path, count: int, seed: int) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{s} \t{label}\n" for s, label in classification_rows(count, seed)))
    return path


def ner_sentences(count: int, seed: int, long_every: int = 0) -> list[tuple[list[str], list[str]]]:
    """(tokens, IOB2 tags); every `long_every`-th sentence repeats clauses to exceed a short window."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        clauses = 4 if long_every and i % long_every == 0 else 1
        tokens, tags = [], []
        for _ in range(clauses):
            person, city, org = rng.choice(PEOPLE), rng.choice(CITIES), rng.choice(ORGS)
            tokens += [person, rng.choice(VERBS), "in", city, "for", org, "."]
            tags += ["B-PER", "O", "O", "B-LOC", "O", "B-ORG", "O"]
        out.append((tokens, tags))
    return out


def to_iob1(tags: list[str]) -> list[str]:
    """IOB2 -> IOB1: B- only where an entity directly follows one of the same type."""
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-") and not (i and tags[i - 1] != "O" and tags[i - 1][2:] == tag[2:]):
            tag = "I-" + tag[2:]
        out.append(tag)
    return out


def write_conll(path: Path, sentences, iob1: bool = True) -> Path:
    lines = ["-DOCSTART- -X- O O", ""]
    for tokens, tags in sentences:
        tags = to_iob1(tags) if iob1 else tags
        lines += [f"{tok} NN O {tag}" for tok, tag in zip(tokens, tags)] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def squad_articles(count: int, seed: int) -> dict:
    rng = random.Random(seed)
    paragraphs = []
    for i in range(count):
        person, city, org = rng.choice(PEOPLE), rng.choice(CITIES), rng.choice(ORGS)
        filler = " ".join(rng.sample(FILLER, 4))
        context = f"{filler} . {person} lives in {city} and works for {org} . {filler} ."
        if i % 2:
            question, answer = f"where does {person} live ?", city
        else:
            question, answer = f"what company does {person} work for ?", org
        start = context.index(f" {answer} ") + 1
        qas = [{"id": f"q{i}", "question": question, "answers": [{"text": answer, "answer_start": start}]}]
        paragraphs.append({"context": context, "qas": qas})
    return {"version": "1.1", "data": [{"title": "tiny", "paragraphs": paragraphs}]}


def write_squad(path: Path, count: int, seed: int) -> Path:
    path.write_text(json.dumps(squad_articles(count, seed)))
    return path
