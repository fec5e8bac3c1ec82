"""The official SQuAD exact match and F1 (the v1.1 / v2.0 evaluation scripts' normalisation).

normalize: lowercase, drop punctuation, drop the articles a/an/the, fold whitespace. Each
prediction scores the maximum over its gold answers. An empty gold list (a v2.0 unanswerable
question) is scored against the empty string, as the v2.0 script does.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # v2.0: an empty answer is right only against an empty one
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: dict[str, str], gold_answers: dict[str, list[str]]) -> dict:
    """EM and F1 in percent over the questions of `gold_answers` (a missing prediction scores 0)."""
    if not gold_answers:
        raise ValueError("no questions to score")
    em = f1 = 0.0
    has_ans = {"n": 0, "em": 0.0, "f1": 0.0}
    no_ans = {"n": 0, "em": 0.0, "f1": 0.0}
    for qid, answers in gold_answers.items():
        golds = [a for a in answers if normalize_answer(a)] or [""]
        prediction = predictions.get(qid, None)
        if prediction is None:
            q_em = q_f1 = 0.0
        else:
            q_em = max(exact_match_score(prediction, g) for g in golds)
            q_f1 = max(f1_score(prediction, g) for g in golds)
        em += q_em
        f1 += q_f1
        bucket = has_ans if golds != [""] else no_ans
        bucket["n"] += 1
        bucket["em"] += q_em
        bucket["f1"] += q_f1
    n = len(gold_answers)
    out = {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "num_questions": n}
    if no_ans["n"]:  # v2.0 style breakdown
        for name, bucket in (("has_answer", has_ans), ("no_answer", no_ans)):
            if bucket["n"]:
                out[f"{name}_exact_match"] = 100.0 * bucket["em"] / bucket["n"]
                out[f"{name}_f1"] = 100.0 * bucket["f1"] / bucket["n"]
                out[f"{name}_count"] = bucket["n"]
    return out
