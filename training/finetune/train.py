"""Fine-tune a BERT encoder with a task head; reads top to bottom: data, model, optimiser, loop.

    bert finetune classify --model MODEL_DIR --train train.tsv --eval dev.tsv --out runs/sst2

After each epoch the model is scored on --eval; the best epoch (by accuracy, entity F1 or SQuAD
F1) is what ends up in --out, with the tokenizer, task.json and metrics.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.bundle import TOKEN_LEVEL_TASKS
from model import load_pretrained, save_pretrained
from model.tokenizer import load_tokenizer
from training.finetune.batching import length_grouped_batches, model_inputs, random_batches
from training.finetune.losses import task_loss
from training.finetune.model_dir import resolve_model_dir, resolve_tokenizer_dir
from training.finetune.predictor import TorchBackend, predict_features
from training.finetune.settings import FinetuneSettings, make_task
from training.tasks.common import DataError


def load_data(task, path: str, tokenizer, strict: bool, what: str):
    """Read, check labels, report what was skipped, build features: (examples, features, skipped)."""
    examples, problems = task.read(path, for_training=what == "train")
    if what == "train" and hasattr(task, "infer_labels") and not task.labels:
        task.labels = task.infer_labels(examples)
    if hasattr(task, "drop_unknown_labels"):
        examples = task.drop_unknown_labels(examples, problems)
    problems.raise_if(strict)
    problems.report(len(examples))
    if not examples:
        raise DataError(f"{path}: no usable examples ({len(problems)} skipped; the first: {problems.messages[:1]})")
    return examples, task.features(examples, tokenizer), len(problems)


def load_train_and_eval(task, settings, tokenizer, unlabeled: int | None = None):
    """--train and --eval read, checked and encoded, with one summary line on stderr:
    (train_examples, train_features, train_skipped, eval_examples, eval_features, eval_skipped);
    the eval parts are None, None, 0 without --eval. `unlabeled`: a count the line also gives."""
    train_examples, train_features, train_skipped = load_data(task, settings.train, tokenizer, settings.strict, "train")
    eval_examples = eval_features = None
    eval_skipped = 0
    if settings.eval:
        eval_examples, eval_features, eval_skipped = load_data(task, settings.eval, tokenizer, settings.strict, "eval")
    print(
        f"train: {len(train_examples)} examples -> {len(train_features)} features"
        + (f", {unlabeled} unlabeled" if unlabeled is not None else "")
        + (f"; eval: {len(eval_examples)} examples -> {len(eval_features)} features" if eval_examples else ""),
        file=sys.stderr,
    )
    return train_examples, train_features, train_skipped, eval_examples, eval_features, eval_skipped


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def metrics_record(task, settings, train_examples, train_skipped: int, eval_examples, eval_skipped: int, **extra):
    """metrics.json before the first epoch: the data used and skipped, the settings, no history yet."""
    return {
        "task": task.head,
        "main_metric": task.main_metric,
        "best_epoch": None,
        "best": None,
        "history": [],
        "train_file": str(settings.train),
        "eval_file": settings.eval,
        "train_examples": len(train_examples),
        "train_skipped": train_skipped,
        "eval_examples": len(eval_examples) if eval_examples else 0,
        "eval_skipped": eval_skipped,
        **extra,  # what a caller adds, e.g. distillation's unlabeled_examples and teacher_eval
        "settings": dataclasses.asdict(settings),
    }


def evaluate_model(model, task, examples, features, tokenizer, settings, device) -> dict:
    backend = TorchBackend(model, device, settings.precision)
    token_level = task.head in TOKEN_LEVEL_TASKS
    outputs = predict_features(backend, features, tokenizer.pad_id, token_level, settings.eval_batch_size)
    return task.score(examples, features, outputs)


def seed_and_pick_device(settings: FinetuneSettings) -> str:
    """Seed Python, NumPy and torch, set torch's CPU threads; the device to train on."""
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = settings.device if settings.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device")
    return device


def adamw_with_schedule(model: torch.nn.Module, settings: FinetuneSettings, train_count: int):
    """(trained parameters, AdamW without decay on biases / LayerNorm, linear warm-up then linear decay)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": settings.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=settings.lr,
        fused=True,  # one kernel for the whole update (CPU and CUDA): less per-step overhead
    )
    batches_per_epoch = math.ceil(train_count / settings.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / settings.grad_accum)
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = int(settings.warmup * total_steps) if settings.warmup < 1 else int(settings.warmup)

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return params, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def save_best_model(model: torch.nn.Module, out_dir: Path, entry: dict, labels: list[str]) -> None:
    """The epoch's weights into --out, with the confusion matrix of its evaluation when there is one."""
    save_pretrained(model, out_dir)
    if entry.get("eval", {}).get("confusion_matrix") is not None:
        from training.metrics.classification import plot_confusion_matrix

        plot_confusion_matrix(entry["eval"]["confusion_matrix"], labels, out_dir / "confusion_matrix.png")


def finetune(settings: FinetuneSettings) -> dict:
    # --- setup -----------------------------------------------------------------------------------
    device = seed_and_pick_device(settings)
    out_dir = Path(settings.out)
    model_dir = resolve_model_dir(settings.model)
    tokenizer = load_tokenizer(resolve_tokenizer_dir(model_dir, settings.model))
    task = make_task(settings)

    # --- data ------------------------------------------------------------------------------------
    train_examples, train_features, train_skipped, eval_examples, eval_features, eval_skipped = load_train_and_eval(
        task, settings, tokenizer
    )

    # --- model -----------------------------------------------------------------------------------
    labels = list(getattr(task, "labels", ()) or ())
    overrides = {}
    if task.head != "question-answering":
        overrides = {"labels": tuple(labels), "problem_type": getattr(task, "problem_type", None)}
    model = load_pretrained(
        model_dir,
        head=task.head,
        num_labels=len(labels) or None,
        allow_new_heads=True,
        config_overrides=overrides,
    )
    model.to(device).train()
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if settings.precision == "bf16" else None

    params, optimizer, scheduler = adamw_with_schedule(model, settings, len(train_features))

    # --- output directory: tokenizer and task description now, weights at the best epoch ---------
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_dir)
    # train_file: `bert export` calibrates static int8 on it
    write_json(out_dir / "task.json", {**task.task_info(), "train_file": str(Path(settings.train).resolve())})

    # --- loop ------------------------------------------------------------------------------------
    rng = np.random.default_rng(settings.seed)
    lengths = [len(f["input_ids"]) for f in train_features]
    main_metric = task.main_metric
    record = metrics_record(task, settings, train_examples, train_skipped, eval_examples, eval_skipped)
    best_value, stale_epochs, started = -math.inf, 0, time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        epoch_start = time.perf_counter()
        if settings.group_by_length:
            batches = length_grouped_batches(lengths, settings.batch_size, rng)
        else:
            batches = random_batches(len(lengths), settings.batch_size, rng)
        loss_sum, loss_count = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{settings.epochs}", unit="batch", dynamic_ncols=True)
        for i, batch in enumerate(bar):
            rows = [train_features[j] for j in batch]
            inputs = {k: torch.from_numpy(v).to(device) for k, v in model_inputs(rows, tokenizer.pad_id).items()}
            targets = {k: torch.from_numpy(v).to(device) for k, v in task.targets(rows).items()}
            with autocast or nullcontext():
                output = model(**inputs)
            loss = task_loss(task.head, getattr(task, "problem_type", None), output, targets, inputs["attention_mask"])
            (loss / settings.grad_accum).backward()
            if (i + 1) % settings.grad_accum == 0 or i + 1 == len(batches):
                if settings.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            loss_count += 1
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        entry = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1, loss_count),
            "train_seconds": time.perf_counter() - epoch_start,
        }
        improved = True
        if eval_examples:
            metrics = evaluate_model(model, task, eval_examples, eval_features, tokenizer, settings, device)
            entry["eval"] = metrics
            improved = metrics[main_metric] > best_value
            print(
                f"epoch {epoch}: train loss {entry['train_loss']:.4f}, eval {main_metric} {metrics[main_metric]:.4f}",
                file=sys.stderr,
            )
        record["history"].append(entry)
        if improved:
            best_value = entry["eval"][main_metric] if eval_examples else -math.inf
            stale_epochs = 0
            record["best_epoch"], record["best"] = epoch, entry.get("eval")
            save_best_model(model, out_dir, entry, labels)
        else:
            stale_epochs += 1
        record["train_seconds"] = time.perf_counter() - started
        write_json(out_dir / "metrics.json", record)
        if settings.early_stopping and stale_epochs >= settings.early_stopping:
            print(f"early stop: {stale_epochs} epochs without a better {main_metric}", file=sys.stderr)
            break
    return record
