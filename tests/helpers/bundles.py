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
    """A tiny random model directory (config.json, model.safetensors, vocab.txt, tokenizer.json, task.json)."""
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
        (directory / "task.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return directory


def make_tiny_bundle(
    tmp_dir: str | Path,
    task: str,
    labels: list[str] | None = None,
    quantize: str | None = None,
    optimize: bool = False,
    name: str | None = None,
) -> Path:
    """Build a tiny random model of `task` under `tmp_dir` and export it; returns the bundle directory.

    task: sequence-classification | token-classification | question-answering | fill-mask | embedding.
    """
    from training.export import export_bundle

    tmp_dir = Path(tmp_dir)
    suffix = f"{task}-{quantize or 'fp32'}{'-fused' if optimize else ''}"
    model_dir = make_tiny_model(tmp_dir / f"model-{suffix}", task, labels)
    return export_bundle(
        model_dir, tmp_dir / f"bundle-{suffix}", optimize=optimize, quantize=quantize, name=name or f"tiny-{task}"
    )
