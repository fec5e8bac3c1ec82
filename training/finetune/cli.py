"""`bert finetune classify|ner|qa --model DIR --train FILE [--eval FILE] --out DIR [options]`.

bert finetune classify --model MINILM_DIR --train data/sst2/train.tsv --eval dev.tsv --out runs/sst2
bert finetune ner --model MINILM_DIR --train conll2003/train.txt --eval conll2003/valid.txt --out runs/conll
bert finetune qa --model MINILM_DIR --train squad/train.json --eval squad/dev.json --out runs/squad
"""

from __future__ import annotations

import sys

from core.args import parse_dataclass, run_cli
from training.finetune.settings import FinetuneSettings

PROG = "bert finetune"


def saved_line(out: str, record: dict) -> str:
    """The one line a training command ends with: where the model is, its epoch and eval metrics."""
    best = record["best"] or {}
    summary = ", ".join(f"{k} {best[k]:.4f}" for k in sorted(best) if isinstance(best[k], float))
    return f"saved {out} (epoch {record['best_epoch']}){': ' + summary if summary else ''}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def run() -> int:
        settings = parse_dataclass(
            FinetuneSettings, argv, PROG, description=__doc__.splitlines()[0], positional=("task",)
        )
        from training.finetune.train import finetune

        print(saved_line(settings.out, finetune(settings)))
        return 0

    return run_cli(run, PROG)


if __name__ == "__main__":
    sys.exit(main())
