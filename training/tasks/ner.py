"""Named-entity data: CoNLL column files and JSONL {tokens, tags}, normalised to IOB2.

Reading: one token per line, the tag in `tag_column` (last by default), a blank line between
sentences, `-DOCSTART-` lines skipped. IOB1 (I- opens an entity, B- only between two touching
entities of one type), IOB2 and BIOES (also BILOU) are read and rewritten to IOB2.

Features: the words, joined by spaces, go through the service's own pre-processing
(core.inference.ner): WordPiece sub-tokens, cut into overlapping windows of max_seq_len. A word's
tag sits on its first sub-token and the others get -100 (ignored by the loss) unless
`label_all_subtokens`. At prediction time each token takes its logits from the window in which it
sits furthest from a cut edge, and each word the argmax of its first sub-token, so `bert evaluate`
scores what `bert serve` answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.inference.ner import encode_ner, join_words, merge_outputs, word_tags
from core.inference.readers import NER_PREFIXES, DataError, check_readable, conll_sentences, jsonl_sentences
from training.metrics.ner import entity_metrics
from training.tasks.common import Problems

IGNORE = -100
SCHEMES = ("auto", "iob1", "iob2", "bioes")


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]  # IOB2; empty when unlabelled
    where: str  # "line N" of the sentence's first token


def to_iob2(tags: list[str]) -> list[str]:
    """Rewrite IOB1 / IOB2 / BIOES (BILOU) tags as IOB2.

    BIOES: S- -> B-, E- -> I- (U- and L- likewise). Then, as conlleval reads chunks, an I- tag
    that does not continue an entity of its type (after O, or after another type) opens one: B-.
    """
    out = []
    for tag in tags:
        if tag != "O" and tag[0] in "SU":
            tag = "B" + tag[1:]
        elif tag != "O" and tag[0] in "EL":
            tag = "I" + tag[1:]
        out.append(tag)
    previous = "O"
    for i, tag in enumerate(out):
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            out[i] = "B" + tag[1:]
        previous = out[i]
    return out


def _detect_scheme(all_tags: list[list[str]]) -> str:
    prefixes = {t[0] for tags in all_tags for t in tags if t != "O"}
    if prefixes & {"E", "S", "L", "U"}:
        return "bioes"
    for tags in all_tags:
        previous = "O"
        for tag in tags:
            if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
                return "iob1"
            previous = tag
    return "iob2"


@dataclass
class NerTask:
    labels: list[str] = field(default_factory=list)  # IOB2 tags in output order; empty = from training data
    max_seq_len: int = 128
    stride: int = 32  # sub-tokens shared by consecutive windows of a long sentence
    label_all_subtokens: bool = False  # tag every sub-token (continuations of B-X get I-X)
    tag_column: int = -1  # CoNLL column holding the tag; -1 = last
    scheme: str = "auto"  # auto | iob1 | iob2 | bioes: the input's tagging scheme

    detected_scheme: str | None = field(default=None, init=False)  # the scheme the last read found

    head = "token-classification"
    main_metric = "f1"

    def _check_scheme(self, raw, problems: Problems) -> None:
        allowed = {"B", "I"} if self.scheme in ("iob1", "iob2") else NER_PREFIXES
        for line, _, tags in raw:
            bad = next((t for t in tags if t != "O" and t[0] not in allowed), None)
            if bad:
                raise DataError(f"{problems.path}:{line}: tag {bad!r} is not {self.scheme.upper()}; pass --scheme auto")

    def read(
        self, path: str | Path, require_labels: bool = True, for_training: bool = True
    ) -> tuple[list[Sentence], Problems]:
        path = check_readable(path)
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme {self.scheme!r} is not one of {SCHEMES}")
        problems = Problems(str(path))
        if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            raw = list(jsonl_sentences(path, problems.add, require_labels))
        else:
            raw = list(conll_sentences(path, self.tag_column, problems.add))
        if not raw and not problems:
            raise DataError(f"{path} holds no sentences")
        if self.scheme == "auto":
            self.detected_scheme = _detect_scheme([tags for _, _, tags in raw])
        else:
            self.detected_scheme = self.scheme
            self._check_scheme(raw, problems)
        sentences = [Sentence(tokens, to_iob2(tags), f"line {line}") for line, tokens, tags in raw]
        return sentences, problems

    def infer_labels(self, sentences: list[Sentence]) -> list[str]:
        """O first, then B-/I- of each entity type in sorted order (both, even if one is unseen)."""
        types = sorted({t[2:] for s in sentences for t in s.tags if t != "O"})
        return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]

    def drop_unknown_labels(self, sentences: list[Sentence], problems: Problems) -> list[Sentence]:
        known = set(self.labels)
        kept = []
        for sentence in sentences:
            unknown = next((t for t in sentence.tags if t not in known), None)
            if unknown:
                problems.add(sentence.where, f"tag {unknown!r} is not in the label map {self.labels}")
            else:
                kept.append(sentence)
        return kept

    # --- features ------------------------------------------------------------------------------

    def features(self, sentences: list[Sentence], tokenizer) -> list[dict]:
        """The service's own windows (core.inference.ner) over the words joined by spaces.

        A word's tag sits on its first sub-token (the token starting at the word's offset); the
        other sub-tokens get IGNORE, or the word's I- tag with `label_all_subtokens`.
        """
        joined = [join_words(s.tokens) for s in sentences]
        inputs, plans = encode_ner(tokenizer, [text for text, _ in joined], self.max_seq_len, self.stride)
        index = {name: i for i, name in enumerate(self.labels)}
        rows = iter(inputs)
        features = []
        for n, (sentence, (_, word_starts), plan) in enumerate(zip(sentences, joined, plans)):
            token_labels = self._token_labels(sentence, word_starts, plan, index) if sentence.tags else None
            for start, end in plan.spans:
                x = next(rows)
                feature = {
                    "input_ids": x.ids,
                    "token_type_ids": [0] * len(x.ids),
                    "example_index": n,
                    "plan": plan,
                    "word_starts": word_starts,
                }
                if token_labels is not None:
                    feature["label_ids"] = [IGNORE] + token_labels[start:end] + [IGNORE]
                features.append(feature)
        return features

    def _token_labels(self, sentence: Sentence, word_starts: list[int], plan, index: dict[str, int]) -> list[int]:
        word_at = {start: w for w, start in enumerate(word_starts)}
        labels, word = [], None
        for token in plan.tokens:
            if token.start in word_at and (word is None or word_at[token.start] != word):
                word = word_at[token.start]
                labels.append(index[sentence.tags[word]])
            elif self.label_all_subtokens and word is not None:
                tag = sentence.tags[word]
                labels.append(index.get("I" + tag[1:], index[tag]) if tag.startswith("B-") else index[tag])
            else:
                labels.append(IGNORE)
        return labels

    def targets(self, features: list[dict]) -> dict[str, np.ndarray]:
        width = max(len(f["label_ids"]) for f in features)
        labels = np.full((len(features), width), IGNORE, dtype=np.int64)  # (B, T)
        for i, f in enumerate(features):
            labels[i, : len(f["label_ids"])] = f["label_ids"]
        return {"labels": labels}

    # --- prediction and scoring ----------------------------------------------------------------

    def predictions(self, sentences: list[Sentence], features: list[dict], outputs: list[dict]) -> list[list[str]]:
        """Word-level IOB2 tags: windows merged and words tagged as the service does (core.inference.ner)."""
        per_sentence: list[tuple] = [(None, None, []) for _ in sentences]  # (plan, word starts, window outputs)
        for feature, output in zip(features, outputs):
            plan, starts, rows = per_sentence[feature["example_index"]]
            per_sentence[feature["example_index"]] = (feature["plan"], feature["word_starts"], rows + [output])
        predicted = []
        for sentence, (plan, starts, rows) in zip(sentences, per_sentence):
            if plan is None:  # no word of the sentence survives the tokenizer's normaliser
                predicted.append(["O"] * len(sentence.tokens))
                continue
            logits = merge_outputs([plan], rows)[0]
            predicted.append(word_tags(plan, logits, starts, self.labels))
        return predicted

    def score(self, sentences: list[Sentence], features: list[dict], outputs: list[dict]) -> dict:
        predicted = self.predictions(sentences, features, outputs)
        return entity_metrics([s.tags for s in sentences], predicted)

    def task_info(self) -> dict:
        return {
            "task": self.head,
            "labels": list(self.labels),
            "problem_type": None,
            "max_seq_len": self.max_seq_len,
            "doc_stride": self.stride,
            "label_all_subtokens": self.label_all_subtokens,
            "tag_column": self.tag_column,
            "scheme": self.scheme,
        }
