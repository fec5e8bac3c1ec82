"""Entity-level precision / recall / F1 exactly as `conlleval` (and `seqeval`'s default mode) count them.

An entity is (type, first token, last token); a predicted entity is right only when the type and
both boundaries equal a gold entity, so a partial overlap is one false positive and one false
negative. Chunks are read leniently like conlleval: an I- tag after O or after another type opens
a new entity. IOB1, IOB2 and IOBES tags are all understood.
"""

from __future__ import annotations

from collections import Counter


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def get_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """['B-PER', 'I-PER', 'O', 'I-LOC'] -> [('PER', 0, 1), ('LOC', 3, 3)] (inclusive ends)."""
    chunks = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate(list(tags) + ["O"]):
        tag = chunk[0] if chunk else "O"
        type_ = chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _prf(correct: int, predicted: int, gold: int) -> dict:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold, "predicted": predicted}


def entity_metrics(gold_sequences: list[list[str]], pred_sequences: list[list[str]]) -> dict:
    """Micro-averaged P/R/F1 over all entities (conlleval's overall line), per type, and their macro mean."""
    if len(gold_sequences) != len(pred_sequences):
        raise ValueError(f"{len(gold_sequences)} gold sequences but {len(pred_sequences)} predicted")
    gold_count, pred_count, correct_count = Counter(), Counter(), Counter()
    tokens = correct_tokens = 0
    for index, (gold, pred) in enumerate(zip(gold_sequences, pred_sequences)):
        if len(gold) != len(pred):
            raise ValueError(f"sequence {index}: {len(gold)} gold tags but {len(pred)} predicted")
        gold_entities = set(get_entities(gold))
        pred_entities = set(get_entities(pred))
        gold_count.update(e[0] for e in gold_entities)
        pred_count.update(e[0] for e in pred_entities)
        correct_count.update(e[0] for e in gold_entities & pred_entities)
        tokens += len(gold)
        correct_tokens += sum(g == p for g, p in zip(gold, pred))
    types = sorted(set(gold_count) | set(pred_count))
    per_type = {t: _prf(correct_count[t], pred_count[t], gold_count[t]) for t in types}
    micro = _prf(sum(correct_count.values()), sum(pred_count.values()), sum(gold_count.values()))
    return {
        "precision": micro["precision"],
        "recall": micro["recall"],
        "f1": micro["f1"],
        "macro_f1": sum(v["f1"] for v in per_type.values()) / len(per_type) if per_type else 0.0,
        "token_accuracy": correct_tokens / tokens if tokens else 0.0,
        "num_sentences": len(gold_sequences),
        "num_gold_entities": micro["support"],
        "num_predicted_entities": micro["predicted"],
        "per_type": per_type,
    }
