"""The from-scratch pathology scan (issue #19): does the SST-2 gain of pretraining `mini` over random
initialisation fall between 600 steps and the one-hour run (3,500 steps), and which recipe change
stops it? Each arm changes one thing of issue #8's recipe and is run with benchmarks/pretraining_quality.py:

    Q="python benchmarks/pretraining_quality.py"   # datasets: --data-dir, else $BERTKIT_DATA
    # the MLM-only arm (NSP off): two complete schedules, 600 and 3,500 steps, same data and tokenizer
    $Q prepare  --work runs/scan/mlm-3500 --objective mlm
    $Q pretrain --work runs/scan/mlm-3500 --max-steps 3500 --lr 1e-3 --dropout 0
    mkdir -p runs/scan/mlm-600 && for d in tok data sst2; do ln -s ../mlm-3500/$d runs/scan/mlm-600/$d; done
    $Q pretrain --work runs/scan/mlm-600 --max-steps 600 --lr 1e-3 --dropout 0
    $Q curve    --work runs/scan/mlm-600
    $Q curve    --work runs/scan/mlm-3500      # SST-2 from every checkpoint: the curve in the PNG
    for w in runs/scan/mlm-600 runs/scan/mlm-3500; do $Q finetune --work $w --few-shot-lrs 3e-4 1e-3; done
    # the pretraining-lr arm: MLM only at peak lr 5e-4, the same data (runs/scan/chain.sh.5 did this)
    for n in 600 3500; do w=runs/scan/mlm-lr5e-4-$n; mkdir -p $w
      for d in tok data sst2; do ln -s ../mlm-3500/$d $w/$d; done
      $Q pretrain --work $w --max-steps $n --lr 5e-4 --dropout 0
      $Q finetune --work $w --few-shot-lrs 3e-4 1e-3; done
    python benchmarks/pretraining_scan.py \
      --arm "NSP off, pretraining lr 5e-4=runs/scan/mlm-lr5e-4-600,runs/scan/mlm-lr5e-4-3500" \
      --arm "NSP off (MLM only)=runs/scan/mlm-600,runs/scan/mlm-3500"

The baseline (BERT's MLM+NSP, lr 1e-3, no dropout; #8's recipe) is read from
benchmarks/results/pretraining_quality_budget.json: the same data, tokenizer, fine-tuning and scoring.
Writes benchmarks/results/pretraining_scan.{json,md} and pretraining_scan_curves.png (`bert plot`
of the longest run of the last arm, with its downstream.jsonl).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, machine, markdown_table, write_results  # noqa: E402
from benchmarks.pretraining_quality import FEW_SHOT_ROWS, FT, cls_attention, few_shot_sweep  # noqa: E402
from training.plot import read_downstream  # noqa: E402

BASELINE = "MLM+NSP (#8's recipe)"


def baseline_points() -> list[dict]:
    budget = json.loads((RESULTS / "pretraining_quality_budget.json").read_text())
    points = []
    for steps, run in sorted(budget["runs"].items(), key=lambda kv: int(kv[0])):
        full, few = run["sst2_24000_lr1e-4"], run["sst2_2000_lr1e-4"]
        other_lrs = {float(k.removeprefix("sst2_2000_lr")): v for k, v in run.items() if k.startswith("sst2_2000_lr")}
        points.append({"steps": int(steps), "wall_s": run["pretrain_wall_s"],
                       "heldout_mlm_acc": run["heldout"]["mlm_acc"], "sst2_full": full, "sst2_few": few,
                       "sst2_few_by_lr": other_lrs})  # fmt: skip
    return points


def work_point(work: Path) -> dict:
    """One complete schedule: its final model's held-out MLM accuracy and both SST-2 arms."""

    def accuracy(name: str) -> float:
        return json.loads((work / name / "metrics.json").read_text())["best"]["accuracy"]

    run = json.loads((work / "run" / "run.json").read_text())
    records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = max(r["step"] for r in records)
    few = f"_{FEW_SHOT_ROWS}"
    few_at_default_lr = {"pretrained": accuracy("ft_pretrained" + few), "random_init": accuracy("ft_random_init" + few)}
    return {
        "steps": steps,
        "work": str(work.relative_to(ROOT) if work.is_relative_to(ROOT) else work),
        "precision": run["precision"],
        "wall_s": json.loads((work / "pretrain_wall.json").read_text())["wall_s"],
        "heldout_mlm_acc": json.loads((work / "heldout_eval.json").read_text())["mlm_acc"],
        "sst2_full": {"pretrained": accuracy("ft_pretrained"), "random_init": accuracy("ft_random_init")},
        "sst2_few": few_at_default_lr,
        "sst2_few_by_lr": {
            FT["lr"]: few_at_default_lr,
            **{r["lr"]: {"pretrained": r["pretrained"], "random_init": r["random_init"]} for r in few_shot_sweep(work)},
        },
    }


def gain(arm: dict) -> float:
    return 100 * (arm["pretrained"] - arm["random_init"])


def best_lr_gain(point: dict) -> float | None:
    """The low-resource gain with each initialisation at its own best fine-tuning lr (None: one lr only)."""
    by_lr = point.get("sst2_few_by_lr", {})
    if len(by_lr) < 2:
        return None
    return gain({k: max(a[k] for a in by_lr.values()) for k in ("pretrained", "random_init")})


def row(name: str, point: dict) -> list[str]:
    full, few = point["sst2_full"], point["sst2_few"]
    return [name, f"{point['steps']:,}", f"{point['wall_s'] / 60:.1f}", f"{point['heldout_mlm_acc']:.4f}",
            f"{full['pretrained']:.4f} / {full['random_init']:.4f}", f"**{gain(full):+.1f}**",
            f"{few['pretrained']:.4f} / {few['random_init']:.4f}", f"**{gain(few):+.1f}**"]  # fmt: skip


def verdict(name: str, points: list[dict]) -> dict:
    first, last = points[0], points[-1]
    return {"arm": name, "from_steps": first["steps"], "to_steps": last["steps"],
            "gain_full_from": gain(first["sst2_full"]), "gain_full_to": gain(last["sst2_full"]),
            "gain_few_from": gain(first["sst2_few"]), "gain_few_to": gain(last["sst2_few"]),
            "not_decreasing": gain(last["sst2_full"]) >= gain(first["sst2_full"])}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", action="append", default=[], metavar="NAME=WORK,WORK",
                        help="an arm: its name and the work directories of its complete schedules, "
                        "shortest first")  # fmt: skip
    args = parser.parse_args(argv)
    arms = {BASELINE: baseline_points()}
    curves: dict[str, list[dict]] = {}
    attention = {}
    last_run = None
    for spec in args.arm:
        name, _, works = spec.partition("=")
        dirs = [Path(w).resolve() for w in works.split(",")]
        arms[name] = [work_point(d) for d in dirs]
        downstream = dirs[-1] / "run" / "downstream.jsonl"
        if downstream.exists():
            curves[name] = read_downstream(downstream)
        attention[name] = cls_attention(dirs[-1])
        last_run = dirs[-1] / "run"
    rows = [row(f"{name}", p) for name, points in arms.items() for p in points]
    verdicts = [verdict(name, points) for name, points in arms.items()]
    header = ["arm", "steps", "pretrain min", "held-out MLM acc",
              f"SST-2 {FT['train_rows']:,} rows: pretrained / random init", "gain (points)",
              f"SST-2 {FEW_SHOT_ROWS:,} rows: pretrained / random init", "gain (points)"]  # fmt: skip
    lines = [
        "# From-scratch pretraining: SST-2 gain over random initialisation against pretraining length",
        "",
        "`mini` (4 x 256) pretrained from scratch on the shared corpus (16,000-piece WordPiece vocabulary, "
        "batch 32 x 128, peak lr 1e-3, 6% warm-up, linear decay to 0 at the run's last step, no dropout, fp32), "
        "each length a complete schedule. SST-2 fine-tuning: `bert finetune` with dropout 0.1, lr 1e-4, "
        f"{FT['train_rows']:,} rows for 1 epoch or {FEW_SHOT_ROWS:,} rows for 5 epochs, seed 0; held-out "
        "accuracy on every 20th row of the training file (3,368 rows, used for nothing else), best epoch. "
        "Held-out MLM accuracy: every instance built from corpus/heldout.txt.gz for the arm's objective. "
        "Commands: the docstring of benchmarks/pretraining_scan.py.",
        "",
        markdown_table(header, rows),
        "",
        "Each work directory fine-tunes its own random initialisation (unseeded draws of the same architecture), so "
        "two random-init figures of the same arm differ by the spread of random initialisations (up to ~1 point "
        "here). `pretrain min` is wall clock on a shared 2-core machine: the MLM-only runs shared it with other jobs "
        "and were paused for service benchmarks (alone: ~0.53 s a step, ~31 min for 3,500 steps).",
        "",
    ]
    lr_rows = []
    for name, points in arms.items():
        for point in points:
            best = best_lr_gain(point)
            if best is None:
                continue
            point["sst2_few_best_lr_gain_points"] = best  # in the JSON too
            cells = [
                f"{lr:g}: {a['pretrained']:.4f} / {a['random_init']:.4f} ({gain(a):+.1f})"
                for lr, a in sorted(point["sst2_few_by_lr"].items())
            ]
            lr_rows.append([name, f"{point['steps']:,}", "; ".join(cells), f"**{best:+.1f}**"])
    if lr_rows:
        lines += [f"The fine-tuning learning rate of each arm ({FEW_SHOT_ROWS:,} rows, 5 epochs): pretrained / random "
                  "init (gain) per lr, and the gain when each initialisation gets its own best lr:", "",
                  markdown_table(["arm", "steps", "per lr", "gain, best lr each"], lr_rows), ""]  # fmt: skip
    for v in verdicts:
        lines.append(f"- {v['arm']}: gain {v['gain_full_from']:+.1f} -> {v['gain_full_to']:+.1f} points "
                     f"({FT['train_rows']:,} rows), {v['gain_few_from']:+.1f} -> {v['gain_few_to']:+.1f} "
                     f"({FEW_SHOT_ROWS:,} rows) from {v['from_steps']:,} to {v['to_steps']:,} steps: "
                     f"**{'does not decrease' if v['not_decreasing'] else 'decreases'}**.")  # fmt: skip
        a, b = best_lr_gain(arms[v["arm"]][0]), best_lr_gain(arms[v["arm"]][-1])
        if a is not None and b is not None:
            v["best_lr_few_from"], v["best_lr_few_to"], v["best_lr_not_decreasing"] = a, b, b >= a
            lines.append(f"  With each initialisation at its own best fine-tuning lr ({FEW_SHOT_ROWS:,} rows): "
                         f"{a:+.2f} -> {b:+.2f}: **{'does not decrease' if b >= a else 'decreases'}**.")  # fmt: skip
    for name, records in curves.items():
        lines += ["", f"Checkpoints of the {records[-1]['step']:,}-step {name} run (the LR not yet annealed "
                  "before the last one):", ""]  # fmt: skip
        full_key, few_key = f"sst2_{FT['train_rows']}_gain_points", f"sst2_{FEW_SHOT_ROWS}_gain_points"
        rows = [[f"{r['step']:,}", f"{r['heldout_mlm_acc']:.4f}", f"{r[full_key]:+.1f}", f"{r[few_key]:+.1f}"]
                for r in records]  # fmt: skip
        lines.append(markdown_table(["step", "held-out MLM acc", f"gain, {FT['train_rows']:,} rows",
                                     f"gain, {FEW_SHOT_ROWS:,} rows"], rows))  # fmt: skip
    for name, result in attention.items():
        entropy = ", ".join(f"{a['entropy']:.2f}" for a in result["pretrained_ft"])
        lines += ["", f"[CLS] attention entropy per layer, {name}, longest run: {entropy} nats (uniform "
                  f"{result['uniform_entropy']:.2f}; #8's MLM+NSP run: 1.17, 0.71, 0.71, 0.73)."]  # fmt: skip
    if last_run is not None:
        png = RESULTS / "pretraining_scan_curves.png"
        subprocess.run(
            [sys.executable, "-m", "cli.main", "plot", str(last_run), "--out", str(png)], cwd=ROOT, check=True
        )
        lines += ["", f"![curves]({png.name})"]
    payload = {"machine": machine(), "arms": arms, "verdicts": verdicts, "checkpoint_curves": curves,
               "cls_attention": attention}  # fmt: skip
    write_results("pretraining_scan", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
