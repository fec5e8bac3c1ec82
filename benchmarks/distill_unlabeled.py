"""`bert distill --unlabeled`: the SST-2 students of benchmarks/distill_quality.py, plus unlabelled text.

    python benchmarks/distill_unlabeled.py     # after distill_quality.py --tasks sst2 (its teacher, data, init)

The rest of the SST-2 training pool, the sentences that are neither among distill_quality.py's
20,000 training rows nor in the 5% held-out part (the same split, seed 0), with their labels
stripped, is given as `--unlabeled`: the teacher labels it and the student learns it with the KD
loss alone. Same student, epochs, lr and batch size as distill_quality.py's KD run; the held-out
accuracy is compared with that KD run and its control (plain fine-tuning from the same weights),
read from distill_quality.py's step records. One training command per student, its wall clock
including the teacher's pass over all texts. Writes benchmarks/results/distill_unlabeled.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_model, data_dir, machine, markdown_table, write_results  # noqa: E402

STUDENTS = {"2l": ["--student-layers", "2"], "3l": ["--student-layers", "3"]}
RECIPE = ["--epochs", "2", "--lr", "0.0001", "--batch-size", "32", "--max-seq-len", "64"]  # distill_quality's SST-2


def unlabeled_texts(data: Path, train_file: Path) -> list[str]:
    from training import datasets

    pool, _ = datasets.holdout_split(datasets.load("sst2", data_dir=str(data)), 0.05, seed=0)
    used = {line.split("\t")[0] for line in train_file.read_text(encoding="utf-8").splitlines()[1:]}
    seen, texts = set(), []
    for example in pool:
        if example.text not in used and example.text not in seen:
            seen.add(example.text)
            texts.append(example.text)
    return texts


def accuracy(evaluation: Path) -> float:
    record = json.loads(evaluation.read_text(encoding="utf-8"))
    return 100 * record.get("metrics", record)["accuracy"]


def row(arch: str, result: dict) -> list:
    scores = result["scores"]
    return [
        arch,
        f"{scores['teacher']:.2f}",
        f"{scores['control']:.2f}",
        f"{scores['kd']:.2f}",
        f"{scores['kd + unlabeled']:.2f}",
        f"{scores['kd + unlabeled'] - scores['control']:+.2f}",
        f"{result['train_seconds']:.0f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "distill-bench"), help="distill_quality.py's --work")
    parser.add_argument("--data-dir", help="datasets directory (default: $BERTKIT_DATA)")
    parser.add_argument("--students", nargs="+", default=["2l"], choices=sorted(STUDENTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    base = Path(args.work) / "sst2"
    teacher, train, heldout = base / "models" / "teacher", base / "data" / "train.tsv", base / "data" / "heldout.tsv"
    if not (teacher / "config.json").is_file():
        raise SystemExit(f"no teacher at {teacher}: run benchmarks/distill_quality.py --tasks sst2 first")
    texts = unlabeled_texts(data_dir(args.data_dir), train)
    unlabeled = base / "data" / "unlabeled.txt"
    unlabeled.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    rows, results = [], {}
    for arch in args.students:
        out = base / "models" / f"kd-{arch}-unlabeled"
        step = base / "steps" / f"unlabeled-{arch}.json"  # a student already measured is not trained again
        if step.is_file():
            results[arch] = json.loads(step.read_text(encoding="utf-8"))
            rows.append(row(arch, results[arch]))
            continue
        cmd = [sys.executable, "-m", "cli.main", "distill", "classify", "--teacher", str(teacher)]
        cmd += ["--train", str(train), "--unlabeled", str(unlabeled), "--out", str(out), *STUDENTS[arch], *RECIPE]
        cmd += ["--threads", str(args.threads), "--save-every", "0"]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        evaluation = base / "evals" / f"kd-{arch}-unlabeled.json"
        subprocess.run(
            [sys.executable, "-m", "cli.main", "evaluate", "classify", "--model", str(out), "--data", str(heldout)]
            + ["--out", str(evaluation)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        scores = {
            "kd + unlabeled": accuracy(evaluation),
            "kd": accuracy(base / "evals" / f"kd-{arch}.json"),
            "control": accuracy(base / "evals" / f"ft-{arch}.json"),
            "teacher": accuracy(base / "evals" / "teacher.json"),
        }
        results[arch] = {"scores": scores, "train_seconds": round(seconds, 1), "unlabeled_texts": len(texts)}
        step.parent.mkdir(parents=True, exist_ok=True)
        step.write_text(json.dumps(results[arch], indent=2) + "\n", encoding="utf-8")
        rows.append(row(arch, results[arch]))
        print(json.dumps({arch: results[arch]}), flush=True)
    header = ["student", "teacher", "control (finetune)", "KD", "KD + unlabeled", "KD + unlabeled - control", "wall s"]
    table = (
        "# bert distill --unlabeled on SST-2\n\n"
        f"`python benchmarks/distill_unlabeled.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
        f"20,000 labelled rows plus {len(texts):,} unlabelled SST-2 sentences (the rest of the training pool, "
        "labels stripped), 2 epochs; held-out accuracy (fp32) on distill_quality.py's 2,000 held-out rows. "
        f"{machine()['cpu_count']} cores ({cpu_model()}).\n\n" + markdown_table(header, rows)
    )
    write_results("distill_unlabeled", {"machine": machine(), "cpu": cpu_model(), "students": results}, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
