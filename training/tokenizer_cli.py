"""`bert tokenizer train`: train a BERT WordPiece vocabulary with the `tokenizers` library.

    bert tokenizer train --input corpus/*.txt.gz --vocab-size 30522 --out tok/

Writes `vocab.txt` (one token per line, id = line number), `tokenizer.json` and
`tokenizer_config.json` into `--out`; `load_tokenizer(out)` then loads it. The normalisation is
BERT's: control characters removed, CJK characters split one per token, lowercase and accent
stripping unless `--cased`; `##` marks word continuations.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.args import CliError, run_single_subcommand
from training.corpus import FORMATS, read_documents


@dataclass
class TokenizerTrainSettings:
    input: list[Path] = field(metadata={"help": "training text files (gzip is read transparently)"})
    vocab_size: int = field(metadata={"help": "target vocabulary size, special tokens included"})
    out: Path = field(metadata={"help": "output directory for vocab.txt and tokenizer.json"})
    cased: bool = field(default=False, metadata={"help": "keep case and accents (default: lowercase, strip accents)"})
    cjk_split: bool = field(default=True, metadata={"help": "split CJK characters one per token (--no-cjk-split)"})
    min_frequency: int = field(default=2, metadata={"help": "pieces seen fewer times are not added"})
    limit_alphabet: int = field(default=1000, metadata={"help": "most distinct initial characters kept"})
    input_format: str = field(
        default="auto",
        metadata={
            "help": "bert: sentence per line; lines: a text per line; text: free text; jsonl: JSON lines",
            "choices": list(FORMATS),
        },
    )
    text_field: str = field(default="text", metadata={"help": "JSONL field that holds the text"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing vocabulary in --out"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


def train_tokenizer(settings: TokenizerTrainSettings):
    """Train and save; returns the `BertTokenizer`."""
    from tokenizers import Tokenizer, trainers  # noqa: PLC0415
    from tokenizers.models import WordPiece  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    from model.tokenizer import SPECIAL_TOKENS, BertTokenizer, bert_normalizer, bert_pre_tokenizer  # noqa: PLC0415

    if settings.vocab_size < len(SPECIAL_TOKENS) + 1:
        raise CliError(f"--vocab-size must be more than {len(SPECIAL_TOKENS)} (the special tokens)")
    for path in settings.input:
        if not path.is_file():
            raise FileNotFoundError(f"input file {path} does not exist or is not a file")
    out = settings.out
    if (out / "vocab.txt").exists() and not settings.overwrite:
        raise CliError(f"{out} already holds a vocab.txt; pass --overwrite to replace it")

    lowercase = not settings.cased
    backend = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = bert_normalizer(lowercase)
    backend.pre_tokenizer = bert_pre_tokenizer(settings.cjk_split)
    trainer = trainers.WordPieceTrainer(
        vocab_size=settings.vocab_size,
        min_frequency=settings.min_frequency,
        limit_alphabet=settings.limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=settings.progress,
    )
    total = sum(p.stat().st_size for p in settings.input)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="reading", disable=not settings.progress)
    counts = {"sentences": 0}

    def batches() -> Iterator[list[str]]:
        batch: list[str] = []
        for path in settings.input:
            for doc in read_documents(path, settings.input_format, settings.text_field, bar.update):
                batch.extend(doc)
                if len(batch) >= 4096:
                    counts["sentences"] += len(batch)
                    yield batch
                    batch = []
        counts["sentences"] += len(batch)
        if batch:
            yield batch

    try:
        backend.train_from_iterator(batches(), trainer=trainer)
    finally:
        bar.close()
    if counts["sentences"] == 0:
        raise CliError("the inputs hold no text: every file is empty or has only blank lines")
    vocab = backend.get_vocab()
    tokenizer = BertTokenizer.from_vocab(vocab, lowercase=lowercase, split_cjk=settings.cjk_split)
    tokenizer.save(out)
    return tokenizer, counts["sentences"]


def run(settings: TokenizerTrainSettings) -> int:
    tokenizer, sentences = train_tokenizer(settings)
    note = ""
    if tokenizer.vocab_size < settings.vocab_size:
        note = " (the corpus has too few distinct pieces for the requested size)"
    print(f"trained {tokenizer.vocab_size:,} tokens{note} from {sentences:,} sentences -> {settings.out}")
    return 0


USAGE = "usage: bert tokenizer train --input FILE... --vocab-size N --out DIR [--cased] [--no-cjk-split]"


def main(argv: list[str] | None = None) -> int:
    return run_single_subcommand(
        argv,
        "tokenizer",
        "train",
        TokenizerTrainSettings,
        run,
        USAGE,
        __doc__.splitlines()[0],
    )


if __name__ == "__main__":
    sys.exit(main())
