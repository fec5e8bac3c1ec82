"""int8 vs fp32 accuracy of exported bundles on real evaluation files.

    python benchmarks/int8_accuracy.py --model runs/demo/conll2003/model --task ner \
        --data "$BERTKIT_DATA/conll2003/valid.txt" --name int8_accuracy_conll
    python benchmarks/int8_accuracy.py --model runs/demo/sst2/model --task classify \
        --data runs/demo/sst2/data/heldout.tsv --name int8_accuracy_sst2

Exports the fine-tuned model once as a fused fp32 bundle and once as a fused dynamic int8 bundle
(`bert export --optimize --precision int8-dynamic`; static int8, the default, is measured by
benchmarks/batch_invariance.py), scores both with `bert evaluate` on the same file, and writes
benchmarks/results/NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import markdown_table, write_results  # noqa: E402
from training.export import export_bundle  # noqa: E402

METRIC = {"ner": "f1", "classify": "accuracy", "qa": "f1"}


def evaluate(task: str, bundle: Path, data: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "cli.main", "evaluate", task, "--model", str(bundle), "--data", data]
    proc = subprocess.run(cmd + ["--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"evaluate failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="fine-tuned model directory (bert finetune --out)")
    parser.add_argument("--task", required=True, choices=sorted(METRIC))
    parser.add_argument("--data", required=True, help="evaluation file")
    parser.add_argument("--name", default="int8_accuracy")
    args = parser.parse_args()
    rows, payload = [], {"model": args.model, "task": args.task, "data": args.data, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, precision in (("fused fp32", "fp32"), ("fused int8", "int8-dynamic")):
            bundle = export_bundle(
                args.model, Path(tmp) / variant.replace(" ", "-"), precision=precision, optimize=True
            )
            start = time.time()
            metrics = evaluate(args.task, bundle, args.data, Path(tmp) / "metrics.json")
            score = 100 * metrics[METRIC[args.task]]
            payload["variants"][variant] = {"metric": score, "eval_seconds": time.time() - start}
            rows.append([variant, f"{score:.2f}", f"{time.time() - start:.0f}"])
    fp32, int8 = (payload["variants"][v]["metric"] for v in ("fused fp32", "fused int8"))
    payload["int8_minus_fp32"] = int8 - fp32
    table = (
        f"int8 vs fp32, `{args.task}` on `{args.data}`, model `{args.model}`.\n"
        f"Command: `python benchmarks/int8_accuracy.py --model {args.model} --task {args.task} --data {args.data}`\n\n"
        + markdown_table(["bundle", f"{METRIC[args.task]} (%)", "eval s"], rows)
        + f"\nint8 - fp32: {int8 - fp32:+.2f} points (target: within 1.0)\n"
    )
    write_results(args.name, payload, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
