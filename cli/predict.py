"""`bert predict`: call a running service, or with `--bundle` score a file offline, without one.

    bert predict classify "a gripping, beautifully shot film"              # service/client_cli.py
    bert predict --bundle bundles/minilm-sst2 --input reviews.tsv --output scores.jsonl

The offline path (core.inference.offline) needs neither a service nor torch: it reads the file in
chunks, scores them through the bundle and appends one JSON line per input, the answer the service
gives for it; rerun the same command after an interruption and it goes on where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field

from core.args import CliError, add_dataclass_arguments, parse, run_cli
from core.inference.ner import STRATEGIES
from core.providers import DEVICES

PROG = "bert predict"


def _f(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class OfflineOptions:
    bundle: str = field(metadata={"help": "bundle directory (bert export's output); its task picks the input format"})
    input: str = field(metadata={"help": "file of inputs, in a fine-tuning format of the bundle's task (see below)"})
    output: str = field(metadata={"help": "JSONL file of answers, one line per input; an existing one is resumed"})
    text_column: str | None = _f(None, "column (CSV/TSV/JSONL) of the text; default: the first of sentence, text, ...")
    text_pair_column: str | None = _f(None, "column holding the second text of a pair (classification)")
    # the request fields of the HTTP API; unset = the API's default, and a flag the task has no use for is an error
    top_k: int | None = _f(None, "classify: labels per input (default all); qa: answers per question (1); fill-mask: 5")
    truncate: bool | None = _f(None, "classify, embed: cut inputs past max_seq_len (default); --no-truncate: stop")
    aggregation: str | None = _f(None, "ner: how tokens become entities (default simple)", choices=STRATEGIES)
    ignore_labels: list[str] | None = _f(None, 'ner: entity groups to leave out (default "O")')
    stride: int | None = _f(None, "ner, qa: tokens shared by the windows of a long input (default: the bundle's)")
    max_answer_len: int | None = _f(None, "qa: longest answer in tokens (default 30)")
    handle_impossible: bool | None = _f(None, "qa: allow the empty answer (SQuAD 2.0 models)")
    normalize: bool | None = _f(None, "embed: scale each vector to unit length (default)")
    # how to run
    batch_size: int = _f(32, "sequences per model call (length-sorted within a chunk)")
    chunk_size: int = _f(10_000, "inputs read, scored and written (fsync'ed) at a time; bounds memory and rework")
    device: str = _f("auto", "run on the GPU (cuda) when onnxruntime has one, or on the CPU", choices=DEVICES)
    workers: int | None = _f(None, "batches run at once (default: one per CPU core; 1 on CUDA)")
    threads: int | None = _f(None, "onnxruntime intra-op threads of each (default 1 with several workers)")
    progress: bool = _f(True, "count the inputs first, then show a progress bar with rate and ETA on stderr")


# CLI flag -> (tasks it applies to, request field per task)
TASK_FLAGS = {
    "top_k": {"sequence-classification": "top_k", "question-answering": "top_k", "fill-mask": "top_k"},
    "truncate": {"sequence-classification": "truncate", "embedding": "truncate"},
    "aggregation": {"token-classification": "aggregation_strategy"},
    "ignore_labels": {"token-classification": "ignore_labels"},
    "stride": {"token-classification": "stride", "question-answering": "doc_stride"},
    "max_answer_len": {"question-answering": "max_answer_len"},
    "handle_impossible": {"question-answering": "handle_impossible_answer"},
    "normalize": {"embedding": "normalize"},
}

FORMATS = """\
input formats, by the bundle's task:
  classify, embed, fill-mask  .txt one text per line; .csv/.tsv with a header, or .jsonl objects
                              (the text column: --text-column, else sentence, text, ...)
  ner                         CoNLL (token in the first column, blank line between sentences),
                              or .jsonl with "tokens" (a list) or "text"
  qa                          SQuAD .json, or .jsonl with "question" and "context"
"""


def offline_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} --bundle DIR --input FILE --output FILE [options]",
        description="Score a file offline through a bundle: one JSON line per input, the service's answer to it.",
        epilog=FORMATS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("offline scoring (--bundle DIR, no service needed)")
    add_dataclass_arguments(group, OfflineOptions)
    return parser


def task_options(opts: OfflineOptions, task: str) -> dict:
    """The request fields the flags set for `task`; a flag the task has no use for is a CliError."""
    options = {}
    for flag, by_task in TASK_FLAGS.items():
        value = getattr(opts, flag)
        if value is None:
            continue
        if task not in by_task:
            name = "--" + flag.replace("_", "-")
            raise CliError(f"{name} does not apply to a {task} bundle (it is for {', '.join(by_task)})")
        options[by_task[task]] = value
    return options


def run_offline(opts: OfflineOptions) -> int:
    from core.bundle import read_manifest
    from core.inference.offline import score_bundle

    task = read_manifest(opts.bundle).task
    result = score_bundle(
        opts.bundle,
        opts.input,
        opts.output,
        task_options(opts, task),
        opts.text_column,
        opts.text_pair_column,
        opts.chunk_size,
        opts.batch_size,
        opts.progress,
        opts.device,
        opts.threads,
        opts.workers,
    )
    resumed = f", {result.resumed:,} already there" if result.resumed else ""
    print(
        f"{PROG}: {result.scored:,} inputs scored in {result.seconds:.1f} s ({result.per_second:,.0f}/s){resumed}: "
        f"{result.total:,} answers in {opts.output}",
        file=sys.stderr,
    )
    return 0


def offline_main(argv: list[str]) -> int:
    args = parse(offline_parser(), argv)
    opts = OfflineOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(OfflineOptions)})
    return run_cli(lambda: run_offline(opts), PROG)


def help_text() -> str:
    """Both ways in one help: the service commands, then the offline options."""
    from service.client_cli import _parser as client_parser

    client = client_parser().format_help().split("\n\n", 2)[2]  # after its usage and description
    offline = offline_parser().format_help()
    offline = offline[offline.index("offline scoring (") :]
    return (
        f"usage: {PROG} {{classify,ner,qa,embed,models}} ...\n"
        f"       {PROG} --bundle DIR --input FILE --output FILE [options]\n\n"
        "Call a running service (`bert predict COMMAND --help` for each command), or with --bundle score\n"
        "a file offline, without a service: one JSON line per input, the answer the service gives.\n\n"
        f"{client}\n{offline}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--bundle" or a.startswith("--bundle=") for a in argv):
        return offline_main(argv)
    if not argv or argv in (["-h"], ["--help"]):
        print(help_text())
        return 0 if argv else 2
    from service.client_cli import main as client_main

    return client_main(argv)
