"""The fine-tuning file formats, read as streams and without torch.

Fine-tuning (training/tasks) and offline scoring (`bert predict --bundle`, core.inference.offline)
read files through these generators, so a file `bert finetune` trains on is one `bert predict`
scores. Each yields records as it reads, so a file larger than memory streams:

- `table_rows`: CSV / TSV with a header (GLUE style), or JSONL objects (classification)
- `conll_sentences`: one token per line, blank lines between sentences (NER)
- `jsonl_sentences`: `{"tokens": [...], "tags": [...]}` per line (NER)
- `squad_questions`: SQuAD v1.1 / v2.0 JSON (read whole: it is one JSON document), or JSONL
  `{"question", "context", ...}` per line (streamed)

A record a reader cannot use goes to `problem(where, why)`: training collects them and skips the
record, offline scoring stops there (its output must keep one line per input).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TEXT_COLUMNS = ("sentence", "text", "text_a", "sentence1", "question", "premise", "content", "review")
PAIR_COLUMNS = ("sentence2", "text_b", "hypothesis", "question2", "passage")

Problem = Callable[[str, str], None]  # (where, why), e.g. ("line 7", "no tag column")


class DataError(ValueError):
    """The input file cannot be used; the message names the file and the line or example id."""


def check_readable(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    return path


def _json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, value) of a JSONL file; blank lines skipped."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not a JSON object per line ({err.msg})") from err


def _json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSONL file; a line that is no object stops the read."""
    for number, row in _json_lines(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def table_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, dict row) from CSV/TSV (header required) or JSONL."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from _json_objects(path)
        return
    with open(path, encoding="utf-8", newline="") as f:
        first = f.readline()
        f.seek(0)
        delimiter = "\t" if suffix == ".tsv" or (suffix != ".csv" and "\t" in first) else ","
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        try:
            header = [h.strip() for h in next(reader, [])]
            if not any(header):
                raise DataError(f"{path}: the first line must be a header naming the columns")
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: {len(row)} columns but the header has {len(header)}")
                yield reader.line_num, dict(zip(header, row))
        except csv.Error as err:  # a NUL byte, a field past the size limit: not a ValueError of its own
            raise DataError(f"{path}:{reader.line_num}: {err}") from None


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a plain text file, one text per line; blank lines skipped."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield number, text


def pick_column(columns, wanted: str | None, candidates, path: Path, what: str, required: bool) -> str | None:
    """The column named `wanted`, else the first of `candidates` present (None when not `required`)."""
    if wanted:
        if wanted not in columns:
            raise DataError(f"{path}: no {what} column {wanted!r}; columns are {sorted(columns)}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    if required:
        raise DataError(f"{path}: cannot tell the {what} column among {sorted(columns)}; pass --text-column")
    return None


# --- NER -----------------------------------------------------------------------------------------

NER_PREFIXES = {"B", "I", "E", "S", "L", "U"}


def check_tag(tag: str) -> str | None:
    """None when the tag is well formed, else why not."""
    if tag == "O":
        return None
    prefix, dash, type_ = tag.partition("-")
    if not dash or prefix not in NER_PREFIXES or not type_:
        return f"tag {tag!r} is not O or PREFIX-TYPE with PREFIX in B/I/E/S (or L/U)"
    return None


def conll_sentences(path: Path, tag_column: int | None, problem: Problem) -> Iterator[tuple[int, list, list]]:
    """(first line, tokens, tags) per sentence; `-DOCSTART-` lines skipped.

    The token is the first column. `tag_column=None` reads tokens only (tags []): a file of
    unlabelled tokens, one column, or labelled ones whose tags are not wanted. A sentence with a bad
    line goes to `problem` as a whole.
    """
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
                    problem(f"line {start}", bad)
                tokens, tags, bad = [], [], None
                continue
            if not tokens and bad is None:
                start = number
            if bad is not None:
                continue
            if tag_column is None:
                tokens.append(fields[0])
                continue
            if len(fields) < 2:
                bad = f"line {number} has {len(fields)} column; expected a token and a tag"
                continue
            try:
                tag = fields[tag_column]
            except IndexError:
                bad = f"line {number} has {len(fields)} columns; tag column {tag_column} does not exist"
                continue
            why = check_tag(tag)
            if why:
                bad = f"line {number}: {why}"
                continue
            tokens.append(fields[0])
            tags.append(tag)
    if tokens and bad is None:
        yield start, tokens, tags
    elif bad:
        problem(f"line {start}", bad)


def jsonl_sentences(path: Path, problem: Problem, require_tags: bool) -> Iterator[tuple[int, list, list]]:
    """(line, tokens, tags) per `{"tokens": [...], "tags": [...]}` line (tags may be `ner_tags`)."""
    for number, row in _json_lines(path):
        tokens = row.get("tokens") if isinstance(row, dict) else None
        tags = (row.get("tags") or row.get("ner_tags")) if isinstance(row, dict) else None
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            problem(f"line {number}", "needs a non-empty list of strings under 'tokens'")
            continue
        if tags is None and not require_tags:
            yield number, tokens, []
            continue
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problem(f"line {number}", "needs a list of tag strings under 'tags'")
            continue
        if len(tags) != len(tokens):
            problem(f"line {number}", f"{len(tags)} tags for {len(tokens)} tokens")
            continue
        why = next((w for w in map(check_tag, tags) if w), None)
        if why:
            problem(f"line {number}", why)
            continue
        yield number, tokens, tags


# --- QA ------------------------------------------------------------------------------------------


def squad_questions(path: Path, problem: Problem) -> Iterator[tuple[str, str, dict]]:
    """(where, context, question object) per question.

    SQuAD JSON (`{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}`) is one document and is
    read whole; JSONL, one `{"question", "context", "id"?, "answers"?}` per line, streams. The
    question object is the SQuAD `qas` entry (or the JSONL line) as read, unchecked.
    """
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, row in _json_objects(path):
            context = row.get("context")
            if not isinstance(context, str) or not context.strip():
                problem(f"line {number}", "no context text")
                continue
            yield f"line {number}", context, row
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: line {err.lineno}: {err.msg}") from err
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise DataError(f'{path}: expected SQuAD JSON, an object with a "data" list of articles')
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str) or not context.strip():
                problem(f"data[{a}].paragraphs[{p}]", "no context text")
                continue
            for q, qa in enumerate(paragraph.get("qas", [])):
                yield f"data[{a}].paragraphs[{p}].qas[{q}]", context, qa
