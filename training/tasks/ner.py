"""Named-entity data: CoNLL column files and JSONL {tokens, tags}, normalised to IOB2.

Reading: one token per line, the tag in `tag_column` (last by default), a blank line between
sentences, `-DOCSTART-` lines skipped. IOB1 (I- opens an entity, B- only between two touching
entities of one type), IOB2 and BIOES (also BILOU) are read and rewritten to IOB2.

Features: words are split into WordPiece sub-tokens; the word's tag sits on its first sub-token
and the others get -100 (ignored by the loss) unless `label_all_subtokens`. A sentence longer
than max_seq_len is cut into overlapping windows; at prediction time each word takes its tag
from the window in which it sits furthest from an edge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.metrics.ner import entity_metrics
from training.tasks.common import DataError, Problems, check_readable

IGNORE = -100
PREFIXES = {"B", "I", "E", "S", "L", "U"}
SCHEMES = ("auto", "iob1", "iob2", "bioes")


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]  # IOB2; empty when unlabelled
    where: str  # "line N" of the sentence's first token


def _check_tag(tag: str) -> str | None:
    """None when the tag is well formed, else why not."""
    if tag == "O":
        return None
    prefix, dash, type_ = tag.partition("-")
    if not dash or prefix not in PREFIXES or not type_:
        return f"tag {tag!r} is not O or PREFIX-TYPE with PREFIX in B/I/E/S (or L/U)"
    return None


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


def _conll_sentences(path: Path, tag_column: int, problems: Problems):
    """(first line, tokens, raw tags) per sentence; a sentence with a bad line is reported and skipped."""
    tokens: list[str] = []
    tags: list[str] = []
    start, bad = 0, None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if tokens and bad is None:
                    yield start, tokens, tags
                elif bad:
                    problems.add(f"line {start}", bad)
                tokens, tags, bad = [], [], None
                continue
            if not tokens and bad is None:
                start = number
            if bad is not None:
                continue
            if len(fields) < 2:
                bad = f"line {number} has {len(fields)} column; expected a token and a tag"
                continue
            try:
                tag = fields[tag_column]
            except IndexError:
                bad = f"line {number} has {len(fields)} columns; tag column {tag_column} does not exist"
                continue
            why = _check_tag(tag)
            if why:
                bad = f"line {number}: {why}"
                continue
            tokens.append(fields[0])
            tags.append(tag)
    if tokens and bad is None:
        yield start, tokens, tags
    elif bad:
        problems.add(f"line {start}", bad)


def _jsonl_sentences(path: Path, problems: Problems, require_tags: bool):
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not a JSON object per line ({err.msg})") from err
            tokens = row.get("tokens") if isinstance(row, dict) else None
            tags = (row.get("tags") or row.get("ner_tags")) if isinstance(row, dict) else None
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
                problems.add(f"line {number}", "needs a non-empty list of strings under 'tokens'")
                continue
            if tags is None and not require_tags:
                yield number, tokens, []
                continue
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                problems.add(f"line {number}", "needs a list of tag strings under 'tags'")
                continue
            if len(tags) != len(tokens):
                problems.add(f"line {number}", f"{len(tags)} tags for {len(tokens)} tokens")
                continue
            why = next((w for w in map(_check_tag, tags) if w), None)
            if why:
                problems.add(f"line {number}", why)
                continue
            yield number, tokens, tags


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
        allowed = {"B", "I"} if self.scheme in ("iob1", "iob2") else PREFIXES
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
            raw = list(_jsonl_sentences(path, problems, require_labels))
        else:
            raw = list(_conll_sentences(path, self.tag_column, problems))
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

    def _subtokens(self, sentences: list[Sentence], tokenizer) -> list[tuple[list[int], list[int]]]:
        """Per sentence: (sub-token ids, word index of each sub-token); a word with no pieces gets [UNK]."""
        encodings = tokenizer.backend.encode_batch(
            [s.tokens for s in sentences], is_pretokenized=True, add_special_tokens=False
        )
        out = []
        for sentence, enc in zip(sentences, encodings):
            pieces: list[list[int]] = [[] for _ in sentence.tokens]
            for token_id, word in zip(enc.ids, enc.word_ids):
                if word is not None:
                    pieces[word].append(token_id)
            ids, words = [], []
            for w, word_pieces in enumerate(pieces):
                word_pieces = word_pieces or [tokenizer.unk_id]
                ids += word_pieces
                words += [w] * len(word_pieces)
            out.append((ids, words))
        return out

    def windows(self, length: int) -> list[tuple[int, int]]:
        """[start, end) sub-token ranges covering `length` with `stride` overlap."""
        room = self.max_seq_len - 2
        if room < 1:
            raise ValueError(f"max_seq_len {self.max_seq_len} leaves no room for tokens")
        if length <= room:
            return [(0, length)]
        step = room - min(self.stride, room // 2)
        spans, start = [], 0
        while True:
            end = min(start + room, length)
            spans.append((start, end))
            if end == length:
                return spans
            start += step

    def features(self, sentences: list[Sentence], tokenizer) -> list[dict]:
        index = {name: i for i, name in enumerate(self.labels)}
        features = []
        for n, (sentence, (ids, words)) in enumerate(zip(sentences, self._subtokens(sentences, tokenizer))):
            tag_ids = [index[t] for t in sentence.tags] if sentence.tags else None
            for start, end in self.windows(len(ids)):
                word_index, labels = [-1], [IGNORE]  # [CLS]
                for i in range(start, end):
                    first = i == 0 or words[i - 1] != words[i]
                    word_index.append(words[i] if first else -1)
                    if tag_ids is None:
                        continue
                    if first:
                        labels.append(tag_ids[words[i]])
                    elif self.label_all_subtokens:
                        tag = sentence.tags[words[i]]
                        labels.append(index.get("I" + tag[1:], index[tag]) if tag.startswith("B-") else index[tag])
                    else:
                        labels.append(IGNORE)
                word_index.append(-1)  # [SEP]
                feature = {
                    "input_ids": [tokenizer.cls_id] + ids[start:end] + [tokenizer.sep_id],
                    "token_type_ids": [0] * (end - start + 2),
                    "example_index": n,
                    "word_index": word_index,
                    "window": (start, end),
                }
                if tag_ids is not None:
                    feature["label_ids"] = labels + [IGNORE]
                features.append(feature)
        return features

    def targets(self, features: list[dict]) -> dict[str, np.ndarray]:
        width = max(len(f["label_ids"]) for f in features)
        labels = np.full((len(features), width), IGNORE, dtype=np.int64)
        for i, f in enumerate(features):
            labels[i, : len(f["label_ids"])] = f["label_ids"]
        return {"labels": labels}

    # --- prediction and scoring ----------------------------------------------------------------

    def merge_windows(self, sentences: list[Sentence], features: list[dict], outputs: list[dict]) -> list[list[str]]:
        """Word-level IOB2 tags: each word from the window where it sits furthest from an edge."""
        best: list[dict[int, tuple[int, int]]] = [{} for _ in sentences]  # word -> (margin, label id)
        for feature, output in zip(features, outputs):
            predicted = output["logits"].argmax(axis=-1)  # (T,)
            start, end = feature["window"]
            chosen = best[feature["example_index"]]
            for position, word in enumerate(feature["word_index"]):
                if word < 0:
                    continue
                sub = start + position - 1
                margin = min(sub - start, end - 1 - sub)
                if word not in chosen or margin > chosen[word][0]:
                    chosen[word] = (margin, int(predicted[position]))
        return [
            [self.labels[chosen[w][1]] if w in chosen else "O" for w in range(len(s.tokens))]
            for s, chosen in zip(sentences, best)
        ]

    def score(self, sentences: list[Sentence], features: list[dict], outputs: list[dict]) -> dict:
        predicted = self.merge_windows(sentences, features, outputs)
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
