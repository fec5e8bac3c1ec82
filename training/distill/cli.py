"""`bert distill classify|ner|qa --teacher DIR --train FILE --out DIR (--student-layers N | --student-config NAME)`.

bert distill classify --teacher runs/sst2 --train sst2/train.tsv --eval sst2/dev.tsv --student-layers 3 --out runs/s3
bert distill ner --teacher runs/conll --train conll2003/train.txt --student-config mini --out runs/conll-mini
"""

from __future__ import annotations

import sys

from core.args import parse_dataclass, run_cli
from training.distill.settings import DistillSettings
from training.finetune.cli import saved_line

PROG = "bert distill"
DESCRIPTION = (
    "Distil a fine-tuned teacher into a smaller student: every `bert finetune` option, --teacher instead of "
    "--model, soft targets cached on disk (docs/distillation.md)."
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def run() -> int:
        settings = parse_dataclass(DistillSettings, argv, PROG, description=DESCRIPTION, positional=("task",))
        from training.distill.train import distill

        print(saved_line(settings.out, distill(settings)))
        return 0

    return run_cli(run, PROG)


if __name__ == "__main__":
    sys.exit(main())
