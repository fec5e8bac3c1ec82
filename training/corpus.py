"""Corpus readers: each yields documents, a document being a list of sentences.

Formats (`fmt`):
- `bert`: the original BERT `create_pretraining_data.py` input: one sentence per line, a blank
  line between documents.
- `lines`: one document per line (a task's texts, one per line), cut into sentences by
  `split_sentences`; blank lines are skipped.
- `text`: plain text; blank lines separate documents, lines inside a document are joined and
  cut into sentences by `split_sentences` (English `. ! ?` and Chinese `。！？`).
- `jsonl`: one JSON object per line; its `text_field` holds one document, cut into sentences
  by `split_sentences` (blank lines inside the text are hard breaks); unpaired surrogates
  (`\\ud83d` escapes of a cut emoji) are deleted, as BERT's normalisation deletes them.
- `auto`: `jsonl` for `*.jsonl` / `*.json` (optionally `.gz`), else `bert`.

Gzip is detected by its magic bytes, whatever the file name. A file that is not UTF-8 text
raises `ValueError` with the file and line; nothing is silently dropped except empty documents.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

FORMATS = ("auto", "bert", "lines", "text", "jsonl")

Document = list[str]


# --- opening files ---------------------------------------------------------------------------


OnBytes = Callable[[int], None]


class _CountingReader(io.RawIOBase):
    """Wraps a binary file and reports the (compressed) bytes read, for progress bars."""

    def __init__(self, raw, on_bytes: OnBytes | None):
        self.raw = raw
        self.on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        if n and self.on_bytes is not None:
            self.on_bytes(n)
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_text(path: str | Path, on_bytes: OnBytes | None = None) -> io.TextIOWrapper:
    """Open `path` as UTF-8 text, gunzipping it when it starts with the gzip magic bytes.

    Raises `ValueError` for a file that is clearly not text (NUL bytes or invalid UTF-8 in its
    first 64 KiB); later decoding errors surface as `ValueError` from the readers.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass the files inside it")
    raw = _CountingReader(open(path, "rb"), on_bytes)
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    stream = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == b"\x1f\x8b" else buffered
    try:
        head = stream.peek(1 << 16)[: 1 << 16] if hasattr(stream, "peek") else b""
    except (OSError, EOFError, zlib.error) as err:
        raw.close()
        raise ValueError(f"{path} is not a readable gzip file: {err}") from err
    if b"\x00" in head:
        raw.close()
        raise ValueError(f"{path} is not a text file (it contains NUL bytes); expected UTF-8 text")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.end < len(head) - 3:  # a multi-byte character cut at the end of the peek is fine
            raw.close()
            raise ValueError(f"{path} is not UTF-8 text (invalid byte at offset {err.start})") from err
    return io.TextIOWrapper(stream, encoding="utf-8", newline=None)


_READ_SIZE = 1 << 20  # bytes decoded at once; per-line reads of a gzip stream cost far more


def _lines(path: Path, on_bytes: OnBytes | None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break), with decode errors as ValueError.

    Lines end at `\n` only (a lone `\r` stays inside its line); trailing `\r`s are dropped.
    """
    number = 0
    with open_text(path, on_bytes) as f:
        stream = f.buffer
        tail: list[bytes] = []  # the unfinished last line, in pieces: a line may span many reads
        try:
            while True:
                data = stream.read(_READ_SIZE)
                if not data:
                    break
                cut = data.rfind(b"\n") + 1  # whole lines only; the tail waits for the next read
                if not cut:
                    tail.append(data)  # joined once, when the line ends (not once per read)
                    continue
                whole = b"".join([*tail, data[:cut]]) if tail else data[:cut]
                tail = [data[cut:]] if cut < len(data) else []
                for line in _decode(path, whole, number).split("\n")[:-1]:
                    number += 1
                    yield number, line.rstrip("\r\n")
            if tail:
                yield number + 1, _decode(path, b"".join(tail), number).rstrip("\r\n")
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: the gzip stream is corrupt or truncated after line {number}: {err}") from err


def _decode(path: Path, data: bytes, lines_before: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = lines_before + data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}: line {line} is not valid UTF-8 ({err.reason})") from err


# --- sentence splitting ----------------------------------------------------------------------

# End punctuation, then any closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?。！？]+[\"'”’」』）)\]》»]*")
_CJK_END = set("。！？")
_OPENERS = set("\"'“‘「『（([《«")
_ABBREVIATIONS = {
    *"mr mrs ms dr st jr sr prof rev gen col capt gov sen rep lt sgt".split(),
    *"co inc ltd corp vs cf etc al fig no vol pp".split(),
    *"jan feb mar apr jun jul aug sep sept oct nov dec mt ft ave blvd dept est approx e.g i.e a.m p.m u.s u.k".split(),
}
_INITIAL = re.compile(r"[A-Z]")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return 0x3400 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x2FA1F or 0x3000 <= cp <= 0x303F


def split_sentences(text: str) -> list[str]:
    """Cut a paragraph into sentences.

    Chinese end punctuation (。！？) always ends a sentence. `. ! ?` end one when followed by
    whitespace and then a capital letter, a digit, an opening quote/bracket or a CJK character,
    except after a common abbreviation (Mr. Dr. etc. e.g. ...), a single capital initial
    (J. Smith) or a dotted acronym (U.S.A.).
    """
    text = " ".join(text.split())
    sentences: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        punct = m.group()
        if _CJK_END.intersection(punct):
            boundary = True
        else:
            following = text[end : end + 2]
            if not following.startswith(" ") or len(following) < 2:
                continue
            nxt = following[1]
            boundary = nxt.isupper() or nxt.isdigit() or nxt in _OPENERS or _is_cjk(nxt)
            if boundary and punct.startswith(".") and not punct.startswith(".."):
                before = text[start : m.start()].rsplit(" ", 1)[-1]
                bare = before.lstrip("\"'“‘([«")
                if bare.lower() in _ABBREVIATIONS or _INITIAL.fullmatch(bare) or _DOTTED.fullmatch(bare):
                    boundary = False
        if boundary:
            piece = text[start:end].strip()
            if piece:
                sentences.append(piece)
            start = end
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


def split_paragraphs(text: str) -> list[str]:
    """Sentences of a multi-paragraph text: blank lines are hard breaks, single newlines are spaces."""
    return [s for para in re.split(r"\n\s*\n", text) for s in split_sentences(para)]


# --- readers ---------------------------------------------------------------------------------


def read_bert_format(path: str | Path, on_bytes: OnBytes | None = None) -> Iterator[Document]:
    """One sentence per line, a blank line between documents."""
    doc: Document = []
    for _, line in _lines(Path(path), on_bytes):
        line = line.strip()
        if line:
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def read_plain_text(path: str | Path, on_bytes: OnBytes | None = None) -> Iterator[Document]:
    """Blank-line-separated documents of free text, cut into sentences."""
    block: list[str] = []
    for _, line in _lines(Path(path), on_bytes):
        if line.strip():
            block.append(line)
        elif block:
            doc = split_sentences(" ".join(block))
            if doc:
                yield doc
            block = []
    if block:
        doc = split_sentences(" ".join(block))
        if doc:
            yield doc


def read_lines(path: str | Path, on_bytes: OnBytes | None = None) -> Iterator[Document]:
    """One document per non-blank line, cut into sentences."""
    for _, line in _lines(Path(path), on_bytes):
        doc = split_sentences(line)
        if doc:
            yield doc


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can escape them; UTF-8 and the tokenizer cannot hold them


def read_jsonl(path: str | Path, text_field: str = "text", on_bytes: OnBytes | None = None) -> Iterator[Document]:
    """One JSON object per line; `text_field` is one document."""
    path = Path(path)
    for number, line in _lines(path, on_bytes):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from err
        if not isinstance(record, dict) or text_field not in record:
            raise ValueError(f"{path}: line {number} has no {text_field!r} field (use --text-field to pick another)")
        text = record[text_field]
        if not isinstance(text, str):
            raise ValueError(f"{path}: line {number}: field {text_field!r} is {type(text).__name__}, not a string")
        if not text.isascii():  # a JSON escape such as "\\ud83d" of a cut emoji: BERT deletes it (category Cs)
            text = _LONE_SURROGATE.sub("", text)
        doc = split_paragraphs(text)
        if doc:
            yield doc


def detect_format(path: str | Path) -> str:
    name = Path(path).name.lower().removesuffix(".gz")
    return "jsonl" if name.endswith((".jsonl", ".json")) else "bert"


def read_documents(
    path: str | Path, fmt: str = "auto", text_field: str = "text", on_bytes: OnBytes | None = None
) -> Iterator[Document]:
    """Documents (lists of non-empty sentences) of one file in format `fmt` (see module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown corpus format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "bert":
        return read_bert_format(path, on_bytes)
    if fmt == "lines":
        return read_lines(path, on_bytes)
    if fmt == "text":
        return read_plain_text(path, on_bytes)
    return read_jsonl(path, text_field, on_bytes)


def iter_sentences(paths: Iterable[str | Path], fmt: str = "auto", text_field: str = "text") -> Iterator[str]:
    """Every sentence of every file, in order (for tokenizer training)."""
    for path in paths:
        for doc in read_documents(path, fmt, text_field):
            yield from doc
