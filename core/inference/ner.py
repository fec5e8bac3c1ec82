"""Token-classification post-processing with the Hugging Face pipeline's aggregation semantics.

`aggregate(...)` follows `transformers.TokenClassificationPipeline` (none | simple | first |
average | max): per-token softmax, word-level aggregation for first/average/max, grouping of
adjacent B-/I- tags, and `ignore_labels` (default `["O"]`) filtered last. Two deliberate
differences: `word` is the exact substring `text[start:end]` of the input (so it keeps case,
accents and CJK as sent), and sub-words are recognised by the tokenizer's word ids, which is what
the pipeline's `len(token) != len(text[start:end])` test approximates.

Long inputs are split into overlapping windows (`window_spans`); every token takes its scores
from the window where it sits farthest from an edge (`merge_windows`), so no entity is cut.
`encode_ner` and `merge_outputs` are the whole path from texts to per-token logits: the service
aggregates them into entities, evaluation reads each word's tag off its first token (`word_tags`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.batches import ModelInput
from core.inference.classify import label_names, softmax

STRATEGIES = ("none", "simple", "first", "average", "max")


@dataclass(frozen=True)
class Token:
    start: int  # character offsets into the input string
    end: int
    word_id: int | None  # word index in the input; equal ids = pieces of one word
    token: str = ""  # the vocabulary token, e.g. "##ing"
    is_unk: bool = False


def window_spans(n_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) spans over `n_tokens` content tokens, `window` long, sharing `stride` tokens."""
    if window < 1:
        raise ValueError("window must be at least 1 token")
    stride = min(max(stride, 0), window - 1)
    if n_tokens <= window:
        return [(0, n_tokens)]
    step = window - stride
    spans = []
    start = 0
    while True:
        end = min(start + window, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += step


@dataclass
class NerPlan:
    """One text's content tokens (no specials) and the windows its model inputs cover."""

    tokens: list[Token]
    spans: list[tuple[int, int]]


def default_stride(max_seq_len: int) -> int:
    """Tokens shared by consecutive windows when neither the bundle nor the request sets it."""
    return (max_seq_len - 2) // 4


def encode_ner(
    tokenizer, texts: Sequence[str], max_seq_len: int, stride: int | None = None
) -> tuple[list[ModelInput], list[NerPlan]]:
    """Model inputs ([CLS] window [SEP], windows in text order) and one plan per text."""
    window = max_seq_len - 2  # content tokens per window: [CLS] ... [SEP]
    stride = default_stride(max_seq_len) if stride is None else min(stride, window - 1)
    cls_id, sep_id, unk_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.unk_id
    inputs: list[ModelInput] = []
    plans = []
    for enc in tokenizer.encode_batch(list(texts)):
        content = [i for i, special in enumerate(enc.special_tokens_mask) if not special]
        tokens = [
            Token(enc.offsets[i][0], enc.offsets[i][1], enc.word_ids[i], enc.tokens[i], enc.ids[i] == unk_id)
            for i in content
        ]
        spans = window_spans(len(tokens), window, stride) if tokens else []
        ids = [enc.ids[i] for i in content]
        inputs += [ModelInput([cls_id] + ids[s:e] + [sep_id]) for s, e in spans]
        plans.append(NerPlan(tokens, spans))
    return inputs, plans


def merge_outputs(plans: Sequence[NerPlan], outputs: Sequence[dict]) -> list[np.ndarray]:
    """Per text, (n_tokens, num_labels) logits merged over its windows; `outputs` in input order."""
    rows = iter(outputs)
    merged = []
    for plan in plans:
        window_logits = [next(rows)["logits"][1:-1] for _ in plan.spans]  # drop [CLS] / [SEP] rows
        if not plan.tokens:
            merged.append(np.zeros((0, 0), dtype=np.float32))
            continue
        merged.append(merge_windows(len(plan.tokens), plan.spans, window_logits))
    return merged


def join_words(words: Sequence[str]) -> tuple[str, list[int]]:
    """Pre-split words (CoNLL) as one text, blank-separated, and each word's character offset in it."""
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    return " ".join(words), starts


def word_tags(plan: NerPlan, logits: np.ndarray, word_starts: Sequence[int], labels: Sequence[str]) -> list[str]:
    """One tag per word: the argmax of the word's first token (the token that starts at the word's offset).

    A word no token starts at (all its characters dropped by the normaliser) is tagged "O".
    """
    first_token = {}
    for i, token in enumerate(plan.tokens):
        first_token.setdefault(token.start, i)
    tags = []
    for start in word_starts:
        i = first_token.get(start)
        tags.append("O" if i is None else labels[int(np.argmax(logits[i]))])
    return tags


def merge_windows(n_tokens: int, spans: list[tuple[int, int]], window_logits: list[np.ndarray]) -> np.ndarray:
    """(n_tokens, num_labels): each token's logits from the window where it has the most context."""
    if not spans:
        raise ValueError("no windows to merge")
    num_labels = window_logits[0].shape[-1]
    merged = np.zeros((n_tokens, num_labels), dtype=np.float32)
    best = np.full(n_tokens, -1, dtype=np.int64)  # context (distance to the nearest window edge) so far
    for (start, end), logits in zip(spans, window_logits):
        positions = np.arange(start, end)
        # the text's own start and end are no window edges: only cut sides count
        left = positions - start if start > 0 else np.full(end - start, n_tokens)
        right = end - 1 - positions if end < n_tokens else np.full(end - start, n_tokens)
        context = np.minimum(left, right)
        better = context > best[start:end]
        merged[start:end][better] = logits[: end - start][better]
        best[start:end] = np.where(better, context, best[start:end])
    return merged


def _tag(label: str) -> tuple[str, str]:
    """("B" | "I", entity type); labels without a B-/I- prefix count as continuations."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def _word_entities(pre: list[dict], strategy: str, names: list[str]) -> list[dict]:
    """first | average | max: one entity per word, all its pieces forced to agree."""
    groups: list[list[dict]] = []
    for entity in pre:
        if groups and entity["is_subword"]:
            groups[-1].append(entity)
        else:
            groups.append([entity])
    words = []
    for group in groups:
        if strategy == "first":
            scores = group[0]["scores"]
        elif strategy == "max":
            scores = max(group, key=lambda e: e["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([e["scores"] for e in group]), axis=0)
        idx = int(scores.argmax())
        words.append(
            {"entity": names[idx], "score": float(scores[idx]), "start": group[0]["start"], "end": group[-1]["end"]}
        )
    return words


def _group(entities: list[dict], text: str) -> list[dict]:
    """Merge adjacent entities of one type; a B- tag always opens a new group."""
    groups: list[list[dict]] = []
    for entity in entities:
        if groups:
            bi, tag = _tag(entity["entity"])
            _, last_tag = _tag(groups[-1][-1]["entity"])
            if tag == last_tag and bi != "B":
                groups[-1].append(entity)
                continue
        groups.append([entity])
    out = []
    for group in groups:
        start, end = group[0]["start"], group[-1]["end"]
        out.append(
            {
                "entity_group": group[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([e["score"] for e in group])),
                "word": text[start:end],
                "start": start,
                "end": end,
            }
        )
    return out


def aggregate(
    text: str,
    tokens: list[Token],
    logits: np.ndarray,
    labels: list[str] | None,
    strategy: str = "simple",
    ignore_labels: list[str] | None = None,
) -> list[dict]:
    """Entities `{entity_group, score, word, start, end}` (plus `index` for "none") of one input.

    `tokens` and `logits` (n_tokens, num_labels) cover the input's content tokens in order, no
    special tokens. With "none", `entity_group` holds the full tag (the pipeline's `entity`).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"aggregation_strategy must be one of {STRATEGIES}, got {strategy!r}")
    ignore = ["O"] if ignore_labels is None else list(ignore_labels)
    if not tokens:
        return []
    logits = np.asarray(logits, dtype=np.float32)
    names = label_names(labels, logits.shape[-1])
    scores = softmax(logits).astype(np.float32)  # (n_tokens, num_labels)
    pre = []
    previous_word = None
    for index, (token, token_scores) in enumerate(zip(tokens, scores)):
        is_subword = index > 0 and token.word_id is not None and token.word_id == previous_word and not token.is_unk
        previous_word = token.word_id
        pre.append(
            {"scores": token_scores, "start": token.start, "end": token.end, "index": index, "is_subword": is_subword}
        )

    if strategy in ("none", "simple"):
        entities = []
        for p in pre:
            idx = int(p["scores"].argmax())
            entities.append(
                {
                    "entity": names[idx],
                    "score": float(p["scores"][idx]),
                    "start": p["start"],
                    "end": p["end"],
                    "index": p["index"],
                }  # fmt: skip
            )
    else:
        entities = _word_entities(pre, strategy, names)

    if strategy == "none":
        return [
            {
                "entity_group": e["entity"],
                "score": e["score"],
                "word": text[e["start"] : e["end"]],
                "start": e["start"],
                "end": e["end"],
                "index": e["index"] + 1,  # position in the input ids, [CLS] = 0, as the pipeline counts
            }
            for e in entities
            if e["entity"] not in ignore
        ]
    return [g for g in _group(entities, text) if g["entity_group"] not in ignore]
