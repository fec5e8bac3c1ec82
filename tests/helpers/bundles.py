"""Tiny random models and bundles for tests: `make_tiny_bundle(tmp_path, "token-classification")`.

The vocabulary is small but real-ish (common English words and sub-words, accented words, CJK
characters), so tokenization, offsets and word ids behave as they do with a real model.
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.helpers.tolerances import network_tolerance

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an of to and in is was it for on that with as by at from this be are not or his her they we you i "
    "he she my your our their who what where when why how which there here all one two three new good bad "
    "great movie film book story love like hate very much more most no yes do did does have has had will "
    "would can could should make made time year day people man woman city country world capital paris france "
    "berlin germany london england john smith mary google apple microsoft company president said says "
    "quick brown fox jumps over lazy dog short long really best worst fun boring acting plot ending "
    "café crème naïve façade über résumé à été où près gare côté marché le la les de du est et "
    "中 文 字 符 和 北 京 上 海 人 大 学 我 你 好 是 的 在"
).split()
SUBWORDS = "##s ##ed ##ing ##ly ##er ##est ##es ##n ##t ##e ##a ##i ##o ##r ##d ##y".split()
PUNCTUATION = list(".,!?;:'\"()-/%$&") + [str(d) for d in range(10)]
LETTERS = list("abcdefghijklmnopqrstuvwxyzéèàüöç") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]

DEFAULT_LABELS = {
    "sequence-classification": ["negative", "positive"],
    "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"],
}
TINY_HIDDEN, TINY_LAYERS, TINY_INTERMEDIATE = 32, 2, 64  # make_tiny_model's encoder
# any output of a tiny model run twice with other rounding; at init LayerNorm keeps hidden values within sqrt(H - 1)
TINY_FP32_TOLERANCE = network_tolerance(TINY_LAYERS, TINY_INTERMEDIATE, math.sqrt(TINY_HIDDEN - 1))
HEADS = {
    "sequence-classification": "sequence-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "fill-mask": "pretraining",
    "embedding": None,
}


def tiny_vocab() -> dict[str, int]:
    tokens = list(dict.fromkeys(SPECIALS + PUNCTUATION + LETTERS + WORDS + SUBWORDS))
    return {token: i for i, token in enumerate(tokens)}


def make_tiny_model(directory: str | Path, task: str, labels: list[str] | None = None, seed: int = 0) -> Path:
    """A tiny random model directory (config.json, model.safetensors, vocab.txt, tokenizer.json, task.json).

    Like a fine-tuned directory, task.json names the training file (written next to it, a few examples
    in the task's format), which `bert export` calibrates static int8 on.
    """
    import json

    import torch

    from model import BertConfig, build_model, save_pretrained
    from model.tokenizer import BertTokenizer

    if task not in HEADS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(HEADS)}")
    directory = Path(directory)
    vocab = tiny_vocab()
    labels = labels or DEFAULT_LABELS.get(task)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=2,
        intermediate_size=TINY_INTERMEDIATE,
        max_position_embeddings=128,
        labels=tuple(labels or ()),
    )
    torch.manual_seed(seed)
    model = build_model(config, HEADS[task], len(labels) if labels else None)
    save_pretrained(model, directory)
    BertTokenizer.from_vocab(vocab, lowercase=True).save(directory)
    if task != "embedding":  # a bare encoder directory has no task.json, as a Hugging Face one
        info = {"task": task, "labels": labels, "problem_type": None, "max_seq_len": 64}
        if task == "sequence-classification":
            info["problem_type"] = "single_label_classification"
        info["train_file"] = str(write_training_file(directory, task, labels).resolve())
        (directory / "task.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return directory


TRAINING_TEXTS = [
    "the quick brown fox jumps over the lazy dog .",
    "paris is the capital of france and berlin is the capital of germany .",
    "i did not like this movie at all , the plot was boring",
    "john smith said the new film was really great fun",
    "mary was in london for google",
    "what a bad story , the worst ending of the year",
    "café crème près de la gare",
    "北 京 和 上 海 是 大 城",
]


def write_training_file(directory: Path, task: str, labels: list[str] | None) -> Path:
    """A few training examples in the fine-tuning format of `task` (fill-mask: plain text lines)."""
    import json

    if task == "sequence-classification":
        path = directory / "train.tsv"
        rows = [f"{text}\t{labels[i % len(labels)]}" for i, text in enumerate(TRAINING_TEXTS)]
        path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    elif task == "token-classification":
        path = directory / "train.conll"
        sentences = []
        for text in TRAINING_TEXTS:  # the first word tagged with the first entity label, the rest O
            words = text.split()
            sentences.append("\n".join(f"{w} {labels[1] if j == 0 else labels[0]}" for j, w in enumerate(words)))
        path.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    elif task == "question-answering":
        path = directory / "train.json"
        qas = [
            {"id": str(i), "question": "who is the capital ?", "answers": [{"text": t.split()[0], "answer_start": 0}]}
            for i, t in enumerate(TRAINING_TEXTS)
        ]
        paragraphs = [{"context": t, "qas": [qa]} for t, qa in zip(TRAINING_TEXTS, qas)]
        path.write_text(json.dumps({"data": [{"title": "tiny", "paragraphs": paragraphs}]}), encoding="utf-8")
    else:
        path = directory / "train.txt"
        path.write_text("\n".join(TRAINING_TEXTS) + "\n", encoding="utf-8")
    return path


def make_tiny_bundle(
    tmp_dir: str | Path,
    task: str,
    labels: list[str] | None = None,
    precision: str = "fp32",
    optimize: bool = False,
    name: str | None = None,
) -> Path:
    """Build a tiny random model of `task` under `tmp_dir` and export it; returns the bundle directory.

    task: sequence-classification | token-classification | question-answering | fill-mask | embedding.
    precision: fp32 | fp16 | int8-dynamic (static int8 needs calibration data: see test_export_static_int8.py).
    """
    from training.export import export_bundle

    tmp_dir = Path(tmp_dir)
    suffix = f"{task}-{precision}{'-fused' if optimize else ''}"
    model_dir = make_tiny_model(tmp_dir / f"model-{suffix}", task, labels)
    return export_bundle(
        model_dir, tmp_dir / f"bundle-{suffix}", precision=precision, optimize=optimize, name=name or f"tiny-{task}"
    )
