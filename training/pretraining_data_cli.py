"""`bert data pretraining`: build MLM + NSP (or MLM + SOP, or MLM only) pretraining instances from a corpus.

    bert data pretraining --input corpus/*.txt.gz --tokenizer tok/ --out data/ \
        --max-seq-len 128 --max-predictions 20 --dupe-factor 5 --workers 2
    bert data pretraining --input texts.txt --input-format lines --objective mlm --masking whole-word \
        --tokenizer tok/ --out data/ --dynamic-masking

Re-running the same command resumes: shards already written are kept.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.args import CliError, run_single_subcommand
from training.corpus import FORMATS
from training.pretraining_data import OBJECTIVES
from training.pretraining_masking import MASKINGS


@dataclass
class PretrainingDataSettings:
    input: list[Path] = field(metadata={"help": "corpus files (gzip is read transparently)"})
    tokenizer: Path = field(metadata={"help": "tokenizer directory, vocab.txt or tokenizer.json"})
    out: Path = field(metadata={"help": "output directory for the shards and manifest.json"})
    max_seq_len: int = field(default=128, metadata={"help": "tokens per instance, [CLS] and [SEP]s included"})
    max_predictions: int = field(default=20, metadata={"help": "most masked positions per instance"})
    dupe_factor: int | None = field(
        default=None,
        metadata={"help": "static masking: copies of the corpus, each with new pairs and masks (default 10)"},
    )
    dynamic_masking: bool = field(
        default=False, metadata={"help": "store unmasked pairs; masks are drawn at load time, new each epoch"}
    )
    short_seq_prob: float = field(default=0.1, metadata={"help": "probability of a shorter random target length"})
    objective: str = field(
        default="mlm+nsp",
        metadata={
            "help": "mlm+nsp: sentence pairs, B next or random (BERT); mlm+sop: pairs in or out of order (ALBERT); "
            "mlm: one segment packed with consecutive sentences, no pair labels (RoBERTa)",
            "choices": list(OBJECTIVES),
        },
    )
    masking: str = field(
        default="token",
        metadata={
            "help": "token: single tokens (BERT); whole-word: all pieces of a word together; "
            "span: spans of whole words, geometric lengths (SpanBERT)",
            "choices": list(MASKINGS),
        },
    )
    chinese_segmenter: str | None = field(
        default=None,
        metadata={"help": "word segmenter for whole-word or span masking of Chinese", "choices": ["jieba"]},
    )
    seed: int = field(default=12345, metadata={"help": "random seed; the same seed gives byte-identical output"})
    workers: int = field(default=1, metadata={"help": "processes building instances (and tokenizer threads)"})
    input_format: str = field(
        default="auto",
        metadata={
            "help": "bert: sentence per line, blank line between documents; lines: a document per line; "
            "text: free text; jsonl: JSON lines",
            "choices": list(FORMATS),
        },
    )
    text_field: str = field(default="text", metadata={"help": "JSONL field that holds the document text"})
    block_tokens: int = field(
        default=20_000_000,
        metadata={"help": "tokens read before a block is shuffled and paired; bounds memory (a few bytes a token)"},
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output directory"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


def run(settings: PretrainingDataSettings) -> int:
    from training.pretraining_build import build_pretraining_data  # noqa: PLC0415 (keeps --help fast)

    if settings.dynamic_masking and settings.dupe_factor is not None:
        raise CliError("--dupe-factor is for static masking; --dynamic-masking draws new masks every epoch instead")
    started = time.perf_counter()
    manifest = build_pretraining_data(
        settings.input,
        settings.tokenizer,
        settings.out,
        max_seq_len=settings.max_seq_len,
        max_predictions=settings.max_predictions,
        dupe_factor=settings.dupe_factor,
        dynamic_masking=settings.dynamic_masking,
        short_seq_prob=settings.short_seq_prob,
        objective=settings.objective,
        masking=settings.masking,
        chinese_segmenter=settings.chinese_segmenter,
        seed=settings.seed,
        workers=settings.workers,
        input_format=settings.input_format,
        text_field=settings.text_field,
        block_tokens=settings.block_tokens,
        overwrite=settings.overwrite,
        progress=settings.progress,
    )
    seconds = time.perf_counter() - started
    c = manifest["counts"]
    pairs = ""
    if "random_next_fraction" in c:
        pairs = f", {c['random_next_fraction']:.1%} random next"
    elif "swapped_fraction" in c:
        pairs = (
            f", {c['swapped_fraction']:.1%} swapped, {c['sentences_cut_for_order']:,} one-sentence chunks cut at a "
            f"word, {c['chunks_skipped_one_word']:,} one-word chunks skipped"
        )
    print(
        f"{c['instances']:,} {settings.objective} instances ({c['instance_tokens']:,} tokens{pairs}) "
        f"from {c['documents']:,} documents / {c['corpus_tokens']:,} corpus tokens in {seconds:.1f}s "
        f"({c['corpus_tokens'] / max(seconds, 1e-9):,.0f} corpus tokens/s) -> {settings.out}"
    )
    return 0


USAGE = (
    "usage: bert data pretraining --input FILE... --tokenizer DIR --out DIR [options]\n\n"
    "Run `bert data pretraining --help` for the options."
)


def _renamed_options(argv: list[str]) -> list[str]:
    """--whole-word-mask (before --masking existed) still works, with a note on stderr."""
    if "--whole-word-mask" not in argv:
        return argv
    print("bert data pretraining: --whole-word-mask is now --masking whole-word", file=sys.stderr)
    return [part for arg in argv for part in (["--masking", "whole-word"] if arg == "--whole-word-mask" else [arg])]


def main(argv: list[str] | None = None) -> int:
    argv = _renamed_options(sys.argv[1:] if argv is None else list(argv))
    return run_single_subcommand(
        argv,
        "data",
        "pretraining",
        PretrainingDataSettings,
        run,
        USAGE,
        __doc__.splitlines()[0],
    )


if __name__ == "__main__":
    sys.exit(main())
