"""Token ids of many texts at once, exactly as `BertTokenizer` gives them, faster for ASCII text.

For an ASCII string the reference BERT normalisation is simple: control characters
(`\\x00-\\x08 \\x0b \\x0c \\x0e-\\x1f \\x7f`) are deleted, `\\t \\n \\r` are spaces, uncased
vocabularies lowercase (accent stripping and CJK spacing do nothing), and every printable
character that is not a letter or digit is punctuation, a token of its own. So a text is cut
into whitespace-separated chunks with bytes operations in C, and each distinct chunk's ids are
computed once (split at punctuation, then greedy longest-match-first WordPiece) and cached.
Corpora repeat their words, so most chunks are dictionary hits.

Texts that are not ASCII, or that contain an added token such as `[MASK]` written out, go
through the exact tokenizer. `IdsEncoder` only takes tokenizers whose normaliser,
pre-tokenizer and model are the reference BERT pipeline that `BertTokenizer.from_vocab`
builds; for any other it uses the exact tokenizer for every text.

    encoder = IdsEncoder(load_tokenizer("vocab.txt"))
    ids, lengths = encoder.encode_batch(["Hello, world!", "Second text."])
    # ids: flat int64 ids without [CLS]/[SEP]; lengths: int64 tokens per text
"""

from __future__ import annotations

import array
import functools
import itertools
import json
import re

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.models import WordPiece

from model.tokenizer import BertTokenizer, bert_normalizer, bert_pre_tokenizer

# Bytes the reference deletes (Unicode category Cc, except tab, newline and carriage return).
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
# Joins the texts of a batch; not ASCII, so no text contains it, and kept by the translation.
_SEPARATOR = b"\x80"
_SPACES = bytes.maketrans(b"\t\n\r", b"   ")  # whitespace the reference turns into spaces
_CACHE_LIMIT = 1_000_000  # entries per cache; cleared when full, so memory stays bounded


class _Cache(dict):
    """A dict that computes a missing value with `compute` and keeps it (cleared when `limit` is reached)."""

    def __init__(self, compute, limit: int | None):
        super().__init__()
        self.compute = compute
        self.limit = limit

    def __missing__(self, key):
        value = self.compute(key)
        if self.limit is not None and len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


class AsciiWordPiece:
    """The reference BERT tokenizer's ids for ASCII texts (no special tokens added).

    Each distinct chunk gets a number; its ids are appended to `store`, so a batch is one
    dictionary lookup per chunk and a numpy gather.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        lowercase: bool,
        unk_id: int,
        max_input_chars_per_word: int = 100,
        continuing_prefix: str = "##",
        cache_limit: int | None = None,
    ):
        self.vocab = vocab
        self.cache_limit = cache_limit or _CACHE_LIMIT
        self.unk = (unk_id,)
        self.max_chars = max_input_chars_per_word
        self.prefix = continuing_prefix
        self.longest = max(map(len, vocab))  # no candidate piece longer than this can match
        table = bytearray(range(256))
        if lowercase:
            table[ord("A") : ord("Z") + 1] = bytes(range(ord("a"), ord("z") + 1))
        self.table = bytes(table)
        self.split_punctuation = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]").findall
        self.words = _Cache(self._wordpiece, self.cache_limit)
        self._reset_chunks()

    def _reset_chunks(self) -> None:
        self.chunks = _Cache(self._number_chunk, limit=None)  # chunk -> its number; reset in encode_batch
        self.store = array.array("q")  # ids of all chunks, in the order they were numbered
        self.starts = array.array("q", [0])  # chunk k's ids are store[starts[k]:starts[k + 1]]
        self.chunks[_SEPARATOR] = 0  # the text separator, with no ids
        self.starts.append(0)

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat int64 ids, int64 token count per text); every text must be ASCII."""
        if not texts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if len(self.chunks) >= self.cache_limit:  # only between batches: numbers stay valid within one
            self._reset_chunks()
        # One bytes pass for the whole batch: delete controls, lowercase, split on whitespace.
        joined = (b" " + _SEPARATOR + b" ").join(t.encode("ascii") for t in texts) + b" " + _SEPARATOR
        chunks = joined.translate(self.table, _CONTROL_BYTES).split()
        numbers = np.fromiter(map(self.chunks.__getitem__, chunks), dtype=np.int64, count=len(chunks))
        starts = np.frombuffer(self.starts, dtype=np.int64)
        first = starts[numbers]
        counts = starts[numbers + 1] - first  # (chunks,) ids per chunk
        del starts  # release the buffer so the arrays can grow again
        store = np.frombuffer(self.store, dtype=np.int64)
        ids = store[_positions(first, counts)]
        del store
        ends = np.cumsum(counts)[numbers == 0]  # (len(texts),) ids before each separator
        return ids, np.diff(ends, prepend=0)

    def _number_chunk(self, chunk: bytes) -> int:
        """Number a new whitespace-free chunk and store its ids: punctuation alone, letters and digits in runs."""
        text = chunk.decode("ascii")
        if chunk.isalnum():
            ids = self.words[text]
        else:
            words = self.words
            ids = itertools.chain.from_iterable([words[w] for w in self.split_punctuation(text)])
        self.store.extend(ids)
        self.starts.append(len(self.store))
        return len(self.starts) - 2

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first; the whole word is [UNK] when too long or a piece is missing."""
        n = len(word)
        if n > self.max_chars:
            return self.unk
        vocab = self.vocab
        whole = vocab.get(word)
        if whole is not None:
            return (whole,)
        ids = []
        start = 0
        while start < n:
            end = min(n, start + self.longest)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                index = vocab.get(piece)
                if index is not None:
                    ids.append(index)
                    break
                end -= 1
            else:
                return self.unk
            start = end
        return tuple(ids)


class IdsEncoder:
    """Ids of many texts without special tokens: ASCII texts on the fast path, the rest exact.

    Picklable, so it can be sent to worker processes; each process keeps its own cache. Not
    thread-safe (the caches are plain dicts): give each thread its own instance.
    """

    def __init__(self, tokenizer: BertTokenizer):
        self.tokenizer = tokenizer
        spec = json.loads(tokenizer.backend.to_str())
        self.fast = _fast_path(spec, tokenizer)
        added = spec.get("added_tokens") or []
        # Case-insensitive, so added tokens matched after normalisation are caught too.
        self.added = _any_of([t["content"] for t in added])
        # Those matched after normalisation also match across deleted controls and \t \n \r (spaces by then).
        self.added_normalized = _any_of([t["content"] for t in added if t.get("normalized", True)])

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat int64 ids, int64 token count per text), the same as the exact tokenizer gives."""
        if self.fast is None:
            return self._exact(texts)
        slow = [i for i, t in enumerate(texts) if not t.isascii()]
        if self.added is not None and self._has_added("\n".join(texts)):
            slow = sorted({*slow, *(i for i, t in enumerate(texts) if self._has_added(t))})
        if not slow:
            return self.fast.encode_batch(texts)
        fast_texts = list(texts)
        for i in slow:
            fast_texts[i] = ""
        ids, lengths = self.fast.encode_batch(fast_texts)
        slow_ids, slow_lengths = self._exact([texts[i] for i in slow])
        lengths[slow] = slow_lengths
        starts = np.cumsum(lengths) - lengths  # (len(texts),) where each text's ids begin
        out = np.empty(int(lengths.sum()), dtype=np.int64)
        is_fast = np.ones(len(texts), dtype=bool)
        is_fast[slow] = False
        out[_positions(starts[is_fast], lengths[is_fast])] = ids
        out[_positions(starts[slow], slow_lengths)] = slow_ids
        return out, lengths

    def _has_added(self, text: str) -> bool:
        """Whether an added token may match in `text` (or, for a joined batch, in one of its texts)."""
        if self.added.search(text):
            return True
        return self.added_normalized is not None and self.added_normalized.search(_normalized(text)) is not None

    def _exact(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return flat_ids(self.tokenizer.backend.encode_batch_fast(texts, add_special_tokens=False))


def flat_ids(encodings: list) -> tuple[np.ndarray, np.ndarray]:
    """(flat int64 ids, int64 token count per encoding) of `tokenizers` encodings."""
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    flat = itertools.chain.from_iterable(e.ids for e in encodings)
    return np.fromiter(flat, dtype=np.int64, count=int(lengths.sum())), lengths


def _any_of(contents: list[str]) -> re.Pattern | None:
    return re.compile("|".join(map(re.escape, contents)), re.IGNORECASE) if contents else None


def _normalized(text: str) -> str:
    """The ASCII of `text` as BERT's normalisation leaves it (but for case): controls deleted, \t \n \r spaces."""
    return text.encode("ascii", "ignore").translate(_SPACES, _CONTROL_BYTES).decode("ascii")


def _positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat indices of the ranges [start, start + length)."""
    total = int(lengths.sum())
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def _fast_path(spec: dict, tokenizer: BertTokenizer) -> AsciiWordPiece | None:
    """The ASCII fast path when the tokenizer is the reference BERT pipeline, else None."""
    model = spec.get("model") or {}
    if model.get("type") != "WordPiece" or model.get("unk_token") != "[UNK]":
        return None
    normalizer = json.dumps(spec.get("normalizer"), sort_keys=True)
    pre_tokenizer = json.dumps(spec.get("pre_tokenizer"), sort_keys=True)
    lowercase = next((lc for (lc, _strip), known in _reference_normalizers().items() if known == normalizer), None)
    if lowercase is None or pre_tokenizer not in _reference_pre_tokenizers():
        return None
    return AsciiWordPiece(
        tokenizer.backend.get_vocab(with_added_tokens=False),
        lowercase=lowercase,
        unk_id=tokenizer.unk_id,
        max_input_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
        continuing_prefix=model.get("continuing_subword_prefix", "##"),
    )


def _component_json(**component) -> str:
    dummy = _HFTokenizer(WordPiece({"[UNK]": 0}, unk_token="[UNK]"))
    for name, value in component.items():
        setattr(dummy, name, value)
    return json.dumps(json.loads(dummy.to_str())[next(iter(component))], sort_keys=True)


@functools.cache
def _reference_normalizers() -> dict[tuple[bool, bool], str]:
    """JSON of `bert_normalizer` for (lowercase, strip_accents); accents do not matter on ASCII."""
    return {
        (lowercase, strip): _component_json(normalizer=bert_normalizer(lowercase, strip))
        for lowercase in (True, False)
        for strip in (True, False)
    }


@functools.cache
def _reference_pre_tokenizers() -> set[str]:
    """JSON of `bert_pre_tokenizer` with and without CJK splitting (the same on ASCII)."""
    return {_component_json(pre_tokenizer=bert_pre_tokenizer(split)) for split in (True, False)}
