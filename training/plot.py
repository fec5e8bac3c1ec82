"""`bert plot RUN_DIR`: loss and accuracy curves of a pretraining run, from its metrics.jsonl, as a PNG.

bert plot runs/mini                      # writes runs/mini/curves.png
bert plot runs/mini --out curves.png

When RUN_DIR also holds downstream.jsonl (one JSON record per evaluated checkpoint: `step`, optionally
`heldout_mlm_acc`, and any `*_gain_points` fields, e.g. the fine-tuning gain over random init that
benchmarks/pretraining_quality.py's `curve` stage writes), a third panel draws those gains against
steps, and the held-out MLM accuracies join the accuracy panel.
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


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file, blank lines skipped; a bad line is an error naming it."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not JSON: {err}") from err
        if not isinstance(record, dict) or "step" not in record:
            raise ValueError(f"{path}:{number} has no `step`")
        records.append(record)
    return records


def read_metrics(path: Path) -> dict[str, list[dict]]:
    """metrics.jsonl -> {"train": [...], "eval": [...]} ordered by step."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is this a `bert pretrain` run directory?")
    by_split: dict[str, list[dict]] = {"train": [], "eval": []}
    for record in read_jsonl(path):
        by_split.setdefault(record.get("split", "train"), []).append(record)
    if not by_split["train"] and not by_split["eval"]:
        raise ValueError(f"{path} has no records yet")
    return {k: sorted(v, key=lambda r: r["step"]) for k, v in by_split.items()}


def read_downstream(path: Path) -> list[dict]:
    """downstream.jsonl -> records ordered by step; [] when the file is absent."""
    return sorted(read_jsonl(path), key=lambda r: r["step"]) if path.exists() else []


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    downstream = read_downstream(run_dir / "downstream.jsonl")
    out = Path(out) if out else run_dir / "curves.png"
    fig, axes = plt.subplots(1, 3 if downstream else 2, figsize=(18 if downstream else 12, 4.5))
    loss_ax, acc_ax = axes[:2]
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
    if downstream:
        _plot_downstream(acc_ax, axes[2], downstream)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _plot_downstream(acc_ax, gain_ax, records: list[dict]) -> None:
    """Held-out MLM accuracy per checkpoint on the accuracy panel; every `*_gain_points` on its own panel."""
    with_acc = [r for r in records if "heldout_mlm_acc" in r]
    if with_acc:
        acc_ax.plot([r["step"] for r in with_acc], [r["heldout_mlm_acc"] for r in with_acc], "s--", color="tab:green",
                    label="held-out mlm_acc (whole set)", markersize=5)  # fmt: skip
    keys = sorted({k for r in records for k in r if k.endswith("_gain_points")})
    for key in keys:
        points = [r for r in records if key in r]
        gain_ax.plot([r["step"] for r in points], [r[key] for r in points], "o-", label=key.removesuffix("_points"))
    gain_ax.axhline(0, color="black", linewidth=0.8)
    gain_ax.set(title="downstream gain over random init", xlabel="step", ylabel="points")


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
