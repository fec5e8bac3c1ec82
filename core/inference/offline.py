"""Offline scoring: a file of inputs through a bundle to a JSONL file of the service's answers.

    bert predict --bundle bundles/minilm-sst2 --input reviews.tsv --output scores.jsonl

Each input is encoded, batched (core.batches.predict_inputs, length-sorted) and answered by
core.inference.answers, the code the service answers with, so each output line is the per-input
result the HTTP API returns for that input. No service, no torch, no training/ needed.

The input streams in chunks (`chunk_size` inputs: read, predict, write, repeat), so memory stays
bounded whatever the file's size. Each chunk's lines are appended in input order and fsync'ed
before the next chunk is read, so after an interruption (even SIGKILL) the output holds whole
lines for a prefix of the inputs, plus at most one cut line. A rerun with the same arguments cuts
that line off, skips as many inputs as there are lines and goes on: every input's answer is
written exactly once, in input order.

Input formats, by the bundle's task and the file's suffix (the fine-tuning formats,
core.inference.readers):
- classification, embedding, fill-mask: `.txt` one text per line; `.csv` / `.tsv` with a header,
  or `.jsonl` objects, the text in the first of readers.TEXT_COLUMNS present (or `text_column`),
  for classification a second text in `text_pair_column` / readers.PAIR_COLUMNS
- token classification: CoNLL (one token per line, first column; blank line between sentences),
  scored as the tokens joined by blanks; or `.jsonl` with `"tokens"` (a list) or `"text"`
- question answering: SQuAD `.json` (read whole), or `.jsonl` with `"question"` and `"context"`
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from core.batches import Backend, predict_inputs
from core.bundle import TOKEN_LEVEL_TASKS
from core.inference.answers import InputError
from core.inference.ner import join_words
from core.inference.readers import (
    JSONL_SUFFIXES,
    PAIR_COLUMNS,
    TEXT_COLUMNS,
    DataError,
    check_readable,
    conll_sentences,
    pick_column,
    squad_questions,
    table_rows,
    text_lines,
)

TEXT_TASKS = ("sequence-classification", "embedding", "fill-mask")
# characters JSON leaves raw but str.splitlines() takes for line ends: escaped, so a line is a line to every reader
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


# --- inputs --------------------------------------------------------------------------------------


def _stop(path: Path) -> Callable[[str, str], None]:
    """The readers' `problem` callback for scoring: a record that cannot be scored stops the run."""

    def problem(where: str, why: str) -> None:
        raise DataError(f"{path}:{where}: {why}")

    return problem


def _text_records(path: Path, text_column: str | None, pair_column: str | None, pairs: bool) -> Iterator:
    if path.suffix.lower() == ".txt":
        for number, text in text_lines(path):
            yield f"line {number}", text
        return
    text_col = pair_col = None
    for number, row in table_rows(path):
        if text_col is None:
            text_col = pick_column(row, text_column, TEXT_COLUMNS, path, "text", True)
            if pairs:
                pair_col = pick_column(row, pair_column, PAIR_COLUMNS, path, "second text", False)
        text = row.get(text_col)
        if not isinstance(text, str):
            raise DataError(f"{path}:{number}: no text in column {text_col!r}")
        pair = row.get(pair_col) if pair_col else None
        if pair_col and not isinstance(pair, str):
            raise DataError(f"{path}:{number}: no text in column {pair_col!r}")
        yield f"line {number}", [text, pair] if pair_col else text


def _ner_records(path: Path) -> Iterator:
    if path.suffix.lower() in JSONL_SUFFIXES:
        for number, row in table_rows(path):
            tokens, text = row.get("tokens"), row.get("text")
            if isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens):
                yield f"line {number}", join_words(tokens)[0]
            elif isinstance(text, str):
                yield f"line {number}", text
            else:
                raise DataError(f"{path}:{number}: needs a non-empty list of strings under 'tokens', or a 'text'")
        return
    for line, tokens, _ in conll_sentences(path, None, _stop(path)):
        yield f"line {line}", join_words(tokens)[0]


def _qa_records(path: Path) -> Iterator:
    for where, context, qa in squad_questions(path, _stop(path)):
        question = qa.get("question") if isinstance(qa, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{path}:{where}: no question text")
        yield where, (question, context)


def read_inputs(
    path: str | Path, task: str, text_column: str | None = None, text_pair_column: str | None = None
) -> Iterator[tuple[str, Any]]:
    """(where, input) per input of the file, the input as the HTTP API takes it (a text, a pair, a
    (question, context)); `where` ("line 7", "data[0].paragraphs[2].qas[1]") names it in messages."""
    path = check_readable(path)
    if task in TEXT_TASKS:
        records = _text_records(path, text_column, text_pair_column, pairs=task == "sequence-classification")
    elif task == "token-classification":
        records = _ner_records(path)
    elif task == "question-answering":
        records = _qa_records(path)
    else:
        raise ValueError(f"offline scoring does not know task {task!r}")
    try:
        yield from records
    except UnicodeDecodeError as err:  # a ValueError whose message names neither the file nor what to do
        raise DataError(f"{path}: is not UTF-8 text ({err.reason} at byte {err.start} of a block)") from None


# --- output --------------------------------------------------------------------------------------


def resume_point(path: str | Path) -> int:
    """Whole lines already in `path` (0 when there is none); a cut last line (a write a kill
    interrupted) is truncated away, so that appending goes on at a line start."""
    path = Path(path)
    if not path.exists():
        return 0
    if path.is_dir():
        raise DataError(f"{path} is a directory; --output must be a file")
    lines, end = 0, 0  # complete lines, byte offset just past the last newline
    with open(path, "rb") as f:
        position = 0
        while block := f.read(1 << 20):
            count = block.count(b"\n")
            if count:
                lines += count
                end = position + block.rindex(b"\n") + 1
            position += len(block)
    if end != position:
        with open(path, "rb+") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return lines


def run_record_path(output: Path) -> Path:
    """`OUTPUT.run.json`: what the lines in OUTPUT were computed with, checked before resuming."""
    return output.with_name(output.name + ".run.json")


def check_or_record_run(output: Path, done: int, run: dict) -> None:
    """Record `run` next to a new output; refuse to resume an output written with another `run`.

    Resuming appends: lines of another model or other options would end up in one file with
    nothing to tell them apart. An output with lines but no record (cut before the record was
    written, or written by hand) is resumed as it is.
    """
    record = run_record_path(output)
    if done and record.exists():
        try:
            before = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{record} is unreadable ({err}); remove it to resume {output} unchecked") from None
        changed = [key for key in sorted(set(before) | set(run)) if before.get(key) != run.get(key)]
        if changed:
            raise DataError(
                f"{output} was written with another {', '.join(changed)} (see {record}): "
                "pass the same to resume, or choose another --output"
            )
    elif not done:
        tmp = record.with_name(record.name + ".tmp")
        tmp.write_text(json.dumps(run, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(record)


def answer_lines(answers: list) -> bytes:
    """One compact JSON line per answer, UTF-8."""
    text = "".join(json.dumps(a, ensure_ascii=False, separators=(",", ":")) + "\n" for a in answers)
    for char, escaped in _LINE_BREAKS.items():
        if char in text:
            text = text.replace(char, escaped)
    return text.encode("utf-8")


# --- progress ------------------------------------------------------------------------------------


class Progress:
    """Inputs done, rate and ETA: a tqdm bar when tqdm is installed, else a plain line every few seconds."""

    def __init__(self, total: int | None, initial: int, enabled: bool, stream=None, every_s: float = 5.0):
        self.stream = stream or sys.stderr
        self.total, self.done, self.initial = total, initial, initial
        self.enabled, self.every_s = enabled, every_s
        self._shown = 0  # whole inputs shown by the bar so far (updates may come in fractions)
        self._start = self._last = time.perf_counter()
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, initial=initial, unit=" inputs", file=self.stream, smoothing=0.05)

    def update(self, n: float) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            step = int(self.done) - self.initial - self._shown
            if step > 0:
                self._bar.update(step)
                self._shown += step
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float) -> str:
        rate = (self.done - self.initial) / max(now - self._start, 1e-9)
        done = int(self.done)
        if self.total is None:
            return f"{done:,} inputs, {rate:,.0f}/s"
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "?"
        return f"{done:,}/{self.total:,} inputs, {rate:,.0f}/s, ETA {eta_text}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# --- scoring -------------------------------------------------------------------------------------


@dataclass
class ScoreResult:
    total: int  # inputs in the file
    resumed: int  # inputs whose lines were already in the output
    scored: int  # inputs scored by this run
    seconds: float  # this run's time from the first chunk to the last fsync

    @property
    def per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def score_file(
    backend: Backend,
    answerer,
    tokenizer,
    records: Callable[[], Iterator[tuple[str, Any]]],
    output: str | Path,
    task: str,
    chunk_size: int = 10_000,
    batch_size: int = 64,
    progress: bool = True,
    source: str = "the input",
    workers: int = 1,
    run: dict | None = None,
) -> ScoreResult:
    """Score every input of `records()` into `output`, resuming after the lines already there.

    `records` is called twice when `progress` counts the inputs first (a pass that reads without
    tokenizing). `source` names the input file in messages. `run` (what the answers depend on:
    model, options, input) is recorded next to a new output and must match to resume one.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = resume_point(output)
    if run is not None:
        check_or_record_run(output, done, run)
    total = sum(1 for _ in records()) if progress else None
    if total is not None and done > total:
        raise DataError(
            f"{output} already holds {done:,} lines but {source} has {total:,} inputs: "
            "it is the output of another input; remove it or choose another --output"
        )
    bar = Progress(total, done, progress)
    stream = records()
    skipped = sum(1 for _ in islice(stream, done))
    if skipped < done:
        bar.close()
        raise DataError(
            f"{output} already holds {done:,} lines but {source} has {skipped:,} inputs: "
            "it is the output of another input; remove it or choose another --output"
        )
    token_level = task in TOKEN_LEVEL_TASKS
    scored, start = 0, time.perf_counter()
    try:
        with open(output, "ab") as out:
            while chunk := list(islice(stream, chunk_size)):
                places, inputs = zip(*chunk)
                try:
                    model_inputs, state = answerer.encode(tokenizer, list(inputs))
                except InputError as err:
                    if err.index is None:  # an option the model cannot take
                        raise ValueError(str(err)) from None
                    raise DataError(f"{source}:{places[err.index]}: {err.reason}") from None
                per_model_input = len(chunk) / max(len(model_inputs), 1)  # progress counts inputs, not windows
                outputs = predict_inputs(
                    backend,
                    model_inputs,
                    tokenizer.pad_id,
                    token_level,
                    batch_size,
                    progress=lambda n, k=per_model_input: bar.update(n * k),
                    workers=workers,
                )
                out.write(answer_lines(answerer.answers(state, outputs)))
                out.flush()
                os.fsync(out.fileno())
                scored += len(chunk)
                bar.update(done + scored - bar.done)  # exact at each chunk's end
    finally:
        bar.close()
    return ScoreResult(total if total is not None else done + scored, done, scored, time.perf_counter() - start)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def score_bundle(
    bundle_dir: str | Path,
    input: str | Path,
    output: str | Path,
    options: dict | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    chunk_size: int = 10_000,
    batch_size: int = 32,
    progress: bool = True,
    device: str = "auto",
    threads: int | None = None,
    workers: int | None = None,
) -> ScoreResult:
    """`bert predict --bundle`: load the bundle, then `score_file` the input into the output.

    options: the task's request fields (core.inference.answers), e.g. {"top_k": 1}. workers:
    batches run at once (default: one per core on CPU, each on `threads` intra-op threads, default
    1; one on CUDA).
    """
    from core.bundle import load_bundle
    from core.inference.answers import ModelSpec, answerer_for
    from core.providers import choose_device, session_providers

    if Path(input).resolve() == Path(output).resolve():
        raise ValueError(f"--output {output} is the input file; choose another")
    on = choose_device(device)[0]
    if workers is None:
        workers = 1 if on == "cuda" else usable_cores()
    if threads is None and on == "cpu" and workers > 1:
        threads = 1  # the cores are shared out between the workers' batches
    bundle = load_bundle(bundle_dir, session_providers(on), threads)
    answerer = answerer_for(ModelSpec.of(bundle), options)
    check_readable(input)
    model_file = bundle.manifest.files.get("model.onnx")
    run = {
        "bundle": bundle.name,
        "model_sha256": model_file.sha256 if model_file else None,
        "input": str(Path(input).resolve()),
        "options": dict(options or {}),
        "text_column": text_column,
        "text_pair_column": text_pair_column,
    }
    return score_file(
        bundle,
        answerer,
        bundle.tokenizer,
        lambda: read_inputs(input, bundle.task, text_column, text_pair_column),
        output,
        bundle.task,
        chunk_size,
        batch_size,
        progress,
        source=str(input),
        workers=workers,
        run=run,
    )
