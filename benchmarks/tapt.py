"""Task-adaptive continued pretraining (TAPT, Gururangan et al. 2020) of all-MiniLM-L6-v2 before
fine-tuning on a small labelled set, against fine-tuning MiniLM directly (issue #19), one table per task.

    python benchmarks/tapt.py --tasks sst2 conll2003 --seeds 0 1 2 3 4   # datasets: --data-dir, else $BERTKIT_DATA
    python benchmarks/tapt.py --quick                                    # tiny sizes, a few minutes: a dry run

Per task:
1. Split. Held-out rows are used for nothing else: SST-2, every 20th row of train.tsv (3,368 rows);
   CoNLL-2003, valid.txt (3,250 sentences). The TAPT text is every other training text, labels
   stripped, one text per line (`tapt.txt`). Per seed, a labelled sample (SST-2 2,000 rows, CoNLL
   1,000 sentences) is drawn with that seed from the same non-held-out rows.
2. TAPT, once per task: `bert data pretraining --input-format lines --objective mlm --masking
   whole-word --dynamic-masking` on tapt.txt with MiniLM's vocabulary (a line is one short text: no
   sentence pairs to form, so MLM only, texts packed into full 128-token sequences), then `bert
   pretrain --init $MINILM` (MiniLM ships no MLM head: the transform gets BERT's initialisation, the
   decoder is tied to the word embeddings), peak lr 1e-4, 10% warm-up, --precision auto. The step
   count is --tapt-steps, or what a 20-step probe says fits --tapt-minutes (the issue's cap: 30
   minutes on 2 cores).
3. Per seed: `bert finetune` from $MINILM and from the TAPT model, same sample, seed and
   hyper-parameters (SST-2: 3 epochs, lr 5e-5, batch 32, 64 tokens; CoNLL: 5 epochs, lr 1e-4, batch
   16, 128 tokens), no --eval; then `bert evaluate` scores each final model once on the held-out rows.
4. The table: per-seed scores, the mean gain and its paired standard error (sd of the per-seed
   differences / sqrt(seeds)).

Work directory (default runs/tapt): every step is skipped when its output exists, so a run that
stopped continues where it was. Writes benchmarks/results/tapt.{json,md} (--quick: into --work).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_flags, cpu_model, data_dir, machine, markdown_table, write_results  # noqa: E402
from benchmarks.distill_quality import PYTHON, Steps  # noqa: E402

NAME = "tapt"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class Plan:
    key: str  # sst2 | conll2003
    kind: str  # classify | ner: the `bert finetune` task
    metric: str  # the held-out metric reported
    labelled: int  # labelled rows (SST-2) or sentences (CoNLL) per seed
    epochs: int
    lr: float
    batch_size: int
    max_seq_len: int


PLANS = {
    "sst2": Plan("sst2", "classify", "accuracy", 2000, 3, 5e-5, 32, 64),
    "conll2003": Plan("conll2003", "ner", "f1", 1000, 5, 1e-4, 16, 128),
}
TAPT = {"lr": 1e-4, "warmup": 0.1, "batch_size": 32, "max_seq_len": 128, "masking": "whole-word"}


def minilm() -> Path:
    from training.demo import default_model

    return default_model()


# --- data -----------------------------------------------------------------------------------------


def split_sst2(data: Path, out: Path, seeds: list[int], labelled: int, limit: int | None) -> dict:
    with (data / "sst2" / "train.tsv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, rows = rows[0], rows[1 : limit and limit + 1]
    heldout = [r for i, r in enumerate(rows) if i % 20 == 0]
    pool = [r for i, r in enumerate(rows) if i % 20 != 0]

    def write(path: Path, part: list[list[str]]) -> None:
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(part)

    write(out / "heldout.tsv", heldout)
    for seed in seeds:
        write(out / f"train_seed{seed}.tsv", random.Random(seed).sample(pool, labelled))
    text = header.index("sentence")
    (out / "tapt.txt").write_text("".join(r[text].strip() + "\n" for r in pool), encoding="utf-8")
    return {"heldout": len(heldout), "tapt_texts": len(pool)}


def split_conll(data: Path, out: Path, seeds: list[int], labelled: int, limit: int | None) -> dict:
    from training.datasets import read_conll, write_conll

    train = read_conll(data / "conll2003" / "train.txt", iob1=True)[:limit]  # written as IOB2
    heldout = read_conll(data / "conll2003" / "valid.txt", iob1=True)[: limit and limit // 4]
    write_conll(heldout, out / "heldout.conll")
    for seed in seeds:
        write_conll(random.Random(seed).sample(train, labelled), out / f"train_seed{seed}.conll")
    (out / "tapt.txt").write_text("".join(" ".join(e.tokens) + "\n" for e in train), encoding="utf-8")
    return {"heldout": len(heldout), "tapt_texts": len(train)}


def prepare(plan: Plan, data: Path, out: Path, seeds: list[int], labelled: int, limit: int | None) -> dict:
    stamp_file = out / "data.json"
    stamp = {"seeds": seeds, "labelled": labelled, "limit": limit}
    if stamp_file.is_file():
        saved = json.loads(stamp_file.read_text(encoding="utf-8"))
        if {k: saved[k] for k in stamp} != stamp:
            raise SystemExit(f"{out} holds data made for {saved}; pass another --work")
        return saved
    out.mkdir(parents=True, exist_ok=True)
    split = split_sst2 if plan.key == "sst2" else split_conll
    stamp.update(split(data, out, seeds, labelled, limit))
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return stamp


# --- TAPT -----------------------------------------------------------------------------------------


def pretrain_cmd(base: Path, data: Path, out: Path, steps: int) -> list[str]:
    return [*PYTHON, "pretrain", "--init", str(base), "--data", str(data), "--out", str(out), "--max-steps",
            str(steps), "--batch-size", str(TAPT["batch_size"]), "--lr", str(TAPT["lr"]), "--warmup",
            str(TAPT["warmup"]), "--save-every", str(max(1, steps // 4)), "--log-every", "10",
            "--no-progress"]  # fmt: skip


def tapt(plan: Plan, base: Path, directory: Path, runner: Steps, minutes: float, max_steps: int | None) -> dict:
    """The continued-pretrained encoder under directory/tapt/model, with the tokenizer files."""
    work = directory / "tapt"
    data = work / "data"
    runner.run("tapt-data", [*PYTHON, "data", "pretraining", "--input", str(directory / "data" / "tapt.txt"),
                             "--input-format", "lines", "--objective", "mlm", "--masking", TAPT["masking"],
                             "--dynamic-masking", "--tokenizer",
                             str(base), "--max-seq-len", str(TAPT["max_seq_len"]), "--out", str(data),
                             "--no-progress"], data / "manifest.json")  # fmt: skip
    probe_file = work / "probe.json"
    if max_steps and not probe_file.exists():
        probe_file.write_text(json.dumps({"step_s": None, "max_steps": max_steps, "minutes": None}))
    if not probe_file.exists():
        probe = work / "probe"
        runner.run("tapt-probe", [*pretrain_cmd(base, data, probe, 25), "--log-every", "1"],
                   probe / "model" / "config.json", clear=probe)  # fmt: skip
        records = [json.loads(line) for line in (probe / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r["split"] == "train"][5:]  # the first steps are slower (warm-up)
        step_s = (train[-1]["elapsed_s"] - train[0]["elapsed_s"]) / (len(train) - 1)
        steps = int(minutes * 60 / (step_s * 1.03))  # ~3% for checkpoints
        probe_file.write_text(json.dumps({"step_s": step_s, "max_steps": steps, "minutes": minutes}))
        shutil.rmtree(probe)
    probe = json.loads(probe_file.read_text())
    run = work / "run"
    record = runner.run("tapt-pretrain", pretrain_cmd(base, data, run, probe["max_steps"]),
                        run / "model" / "config.json")  # fmt: skip
    for name in TOKENIZER_FILES:
        if (base / name).exists() and not (run / "model" / name).exists():
            shutil.copy2(base / name, run / "model" / name)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in metrics if r["split"] == "train"]
    instances = json.loads((data / "manifest.json").read_text())["counts"]["instances"]
    return {"steps": probe["max_steps"], "probe_step_s": probe["step_s"], "wall_s": record["wall_s"],
            "minutes_budget": probe["minutes"],
            "first_mlm_acc": train[0]["mlm_acc"], "last_mlm_acc": train[-1]["mlm_acc"],
            "last_mlm_loss": train[-1]["mlm_loss"], "instances": instances,
            "epochs": probe["max_steps"] * TAPT["batch_size"] / instances,
            "command": record["command"]}  # fmt: skip


# --- fine-tuning and scoring -------------------------------------------------------------------------


def finetune_and_score(plan: Plan, model: Path, arm: str, seed: int, directory: Path, runner: Steps) -> float:
    ext = "tsv" if plan.kind == "classify" else "conll"
    out = directory / "models" / f"{arm}-seed{seed}"
    cmd = [*PYTHON, "finetune", plan.kind, "--model", str(model), "--train",
           str(directory / "data" / f"train_seed{seed}.{ext}"), "--out", str(out), "--epochs", str(plan.epochs),
           "--lr", str(plan.lr), "--batch-size", str(plan.batch_size), "--max-seq-len", str(plan.max_seq_len),
           "--seed", str(seed), "--threads", "2"]  # fmt: skip
    runner.run(f"finetune-{arm}-seed{seed}", cmd, out / "metrics.json", clear=out)
    target = directory / "evals" / f"{arm}-seed{seed}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*PYTHON, "evaluate", plan.kind, "--model", str(out), "--data",
           str(directory / "data" / f"heldout.{ext}"), "--out", str(target)]  # fmt: skip
    runner.run(f"evaluate-{arm}-seed{seed}", cmd, target)
    return json.loads(target.read_text(encoding="utf-8"))[plan.metric]


def run_task(plan: Plan, args, base: Path, work: Path) -> dict:
    directory = work / plan.key
    labelled = min(plan.labelled, 200) if args.quick else plan.labelled
    sizes = prepare(plan, data_dir(args.data_dir), directory / "data", args.seeds, labelled,
                    2000 if args.quick else None)  # fmt: skip
    runner = Steps(directory, base)
    pretrained = tapt(plan, base, directory, runner, args.tapt_minutes, 20 if args.quick else args.tapt_steps)
    scores = {"minilm": {}, "tapt": {}}
    for seed in args.seeds:
        scores["minilm"][seed] = finetune_and_score(plan, base, "minilm", seed, directory, runner)
        scores["tapt"][seed] = finetune_and_score(plan, directory / "tapt" / "run" / "model", "tapt", seed,
                                                  directory, runner)  # fmt: skip
    gains = [100 * (scores["tapt"][s] - scores["minilm"][s]) for s in args.seeds]
    se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
    return {"plan": plan.__dict__ | {"labelled": labelled}, "sizes": sizes, "tapt": pretrained,
            "scores": {arm: {str(s): v for s, v in by_seed.items()} for arm, by_seed in scores.items()},
            "gains_points": gains, "mean_gain_points": statistics.fmean(gains), "paired_se_points": se,
            "met": statistics.fmean(gains) >= 1.0}  # fmt: skip


def task_table(record: dict, seeds: list[int]) -> str:
    plan, metric = record["plan"], record["plan"]["metric"]
    scores = record["scores"]
    rows = [[f"seed {s}", f"{100 * scores['minilm'][str(s)]:.2f}", f"{100 * scores['tapt'][str(s)]:.2f}",
             f"{g:+.2f}"] for s, g in zip(seeds, record["gains_points"], strict=True)]  # fmt: skip
    mean = {arm: 100 * statistics.fmean(record["scores"][arm].values()) for arm in ("minilm", "tapt")}
    rows.append(["mean", f"{mean['minilm']:.2f}", f"{mean['tapt']:.2f}",
                 f"**{record['mean_gain_points']:+.2f} ± {record['paired_se_points']:.2f}** (paired SE)"])  # fmt: skip
    t = record["tapt"]
    what = "rows" if plan["kind"] == "classify" else "sentences"
    return (
        f"### {plan['key']}: held-out {metric} (%), {plan['labelled']:,} labelled {what} per seed, "
        f"{record['sizes']['heldout']:,} held-out {what}\n\nCommand: `{record['command']}`\n\n"
        + markdown_table(["seed", "MiniLM fine-tuned", "TAPT, then fine-tuned", "gain (points)"], rows)
        + f"\n\nTAPT: {t['steps']:,} steps x {TAPT['batch_size']} x {TAPT['max_seq_len']} tokens on "
        f"{record['sizes']['tapt_texts']:,} unlabelled texts ({t['instances']:,} packed sequences, "
        f"{t['epochs']:.1f} passes), {t['wall_s'] / 60:.1f} min; train MLM accuracy {t['first_mlm_acc']:.3f} "
        f"(first logged steps) -> {t['last_mlm_acc']:.3f} (last logged). Target >= +1 point mean gain: "
        f"**{'met' if record['met'] else 'not met'}**.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(PLANS), default=["sst2", "conll2003"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--tapt-minutes", type=float, default=30.0, help="TAPT time budget per task (the probe "
                        "sets the step count)")  # fmt: skip
    parser.add_argument("--tapt-steps", type=int, help="TAPT steps, instead of --tapt-minutes")
    parser.add_argument("--data-dir", help="the datasets (default: $BERTKIT_DATA)")
    parser.add_argument("--work", type=Path, default=Path("runs/tapt"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a dry run of every step")
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    base = minilm()
    results_path = ROOT / "benchmarks" / "results" / f"{NAME}.json"
    tasks = {}
    if not args.quick and results_path.exists():
        tasks = json.loads(results_path.read_text()).get("tasks", {})
    command = "python benchmarks/tapt.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for key in args.tasks:
        tasks[key] = run_task(PLANS[key], args, base, args.work) | {"seeds": args.seeds, "command": command}
        tables = "\n".join(task_table(r, r["seeds"]) for r in tasks.values())
        header = (f"# Task-adaptive continued pretraining (TAPT) of all-MiniLM-L6-v2\n\n"
                  f"Machine: {cpu_model()} ({', '.join(cpu_flags())}), 2 cores. Every score is one `bert evaluate` "
                  "of the final fine-tuned model (fp32) on held-out rows used for nothing else.\n\n")  # fmt: skip
        payload = {"machine": machine(), "tapt_settings": TAPT, "tasks": tasks}
        if args.quick:
            (args.work / f"{NAME}.md").write_text(header + tables)
            (args.work / f"{NAME}.json").write_text(json.dumps(payload, indent=2))
        else:
            write_results(NAME, payload, header + tables)
        print(header + tables, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
