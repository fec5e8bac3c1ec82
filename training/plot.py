"""`bert plot RUN_DIR`: loss and accuracy curves of a pretraining run, from its metrics.jsonl, as a PNG.

bert plot runs/mini                      # writes runs/mini/curves.png
bert plot runs/mini --out curves.png
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from core.args import parse_dataclass, run_cli


@dataclass
class PlotSettings:
    run_dir: str = field(metadata={"help": "run directory holding metrics.jsonl"})
    out: str | None = field(default=None, metadata={"help": "PNG path; default RUN_DIR/curves.png"})


def read_metrics(path: Path) -> dict[str, list[dict]]:
    """metrics.jsonl -> {"train": [...], "eval": [...]} ordered by step."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is this a `bert pretrain` run directory?")
    by_split: dict[str, list[dict]] = {"train": [], "eval": []}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not JSON: {err}") from err
        by_split.setdefault(record.get("split", "train"), []).append(record)
    if not by_split["train"] and not by_split["eval"]:
        raise ValueError(f"{path} has no records yet")
    return {k: sorted(v, key=lambda r: r["step"]) for k, v in by_split.items()}


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    out = Path(out) if out else run_dir / "curves.png"
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for split, style in (("train", "-"), ("eval", "o-")):
        records = metrics.get(split, [])
        if not records:
            continue
        steps = [r["step"] for r in records]
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
            # the pair head's curve is nsp_* or sop_* by objective, and absent for MLM only
            for head, color in (("mlm", "tab:blue"), ("nsp", "tab:orange"), ("sop", "tab:orange")):
                key = f"{head}_{metric}"
                if key in records[0]:
                    ax.plot(steps, [r[key] for r in records], style, color=color, label=f"{split} {key}", markersize=3)
    loss_ax.set(title="loss", xlabel="step", ylabel="cross-entropy")
    acc_ax.set(title="accuracy", xlabel="step", ylabel="accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_dataclass(PlotSettings, argv, prog="bert plot", description=__doc__.split("\n\n")[0],
                               positional=("run_dir",))  # fmt: skip

    def run() -> int:
        print(plot_run(settings.run_dir, settings.out))
        return 0

    return run_cli(run, prog="bert plot")


if __name__ == "__main__":
    sys.exit(main())
