"""Distil a fine-tuned teacher into a smaller student; reads top to bottom: teacher, data, student,
teacher outputs, optimiser, loop.

    bert distill classify --teacher runs/sst2 --train train.tsv --eval dev.tsv --student-layers 3 --out runs/sst2-3l

The output directory is an ordinary `bert finetune` model directory (weights at the best epoch,
tokenizer, task.json, metrics.json) plus distill.json. Each epoch's batch order is a function of
the seed and the epoch alone, so `--resume` skips the batches a checkpoint has done and reaches
the same student as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from model import load_pretrained
from model.tokenizer import load_tokenizer
from training.checkpointing import (
    capture_rng_state,
    latest_checkpoint,
    load_training_state,
    restore_rng_state,
    save_checkpoint,
)
from training.distill import losses
from training.distill.settings import DistillSettings, parse_layer_map
from training.distill.student import (
    check_layer_map,
    default_layer_map,
    describe_student,
    hidden_projections,
    student_from_config,
    student_from_teacher,
)
from training.distill.teacher_cache import OUTPUT_NAMES, TeacherCache, key_parts, load_or_build, weights_checksum
from training.finetune.batching import length_grouped_batches, model_inputs, random_batches
from training.finetune.model_dir import resolve_model_dir, resolve_tokenizer_dir
from training.finetune.settings import FinetuneSettings, make_task
from training.finetune.train import (
    adamw_with_schedule,
    evaluate_model,
    load_train_and_eval,
    metrics_record,
    save_best_model,
    seed_and_pick_device,
    write_json,
)
from training.tasks.classification import Example
from training.tasks.common import check_readable

DEFAULT_PROBLEM_TYPE = FinetuneSettings.__dataclass_fields__["problem_type"].default


# --- the teacher and its task ------------------------------------------------------------------------


def teacher_task(settings: DistillSettings, teacher_dir: Path):
    """The task object with the teacher's labels and label-dependent options; refuses a teacher that
    is not a fine-tuned model of the requested task, and --labels that differ from its labels."""
    task_file = teacher_dir / "task.json"
    if not task_file.exists():
        raise ValueError(
            f"--teacher {settings.teacher} is not a fine-tuned model (no task.json); distil a `bert finetune` output"
        )
    info = json.loads(task_file.read_text(encoding="utf-8"))
    task = make_task(settings)
    if info.get("task") != task.head:
        raise ValueError(
            f"--teacher {settings.teacher} is a {info.get('task')} model; "
            f"`bert distill {settings.task}` needs a {task.head} teacher"
        )
    teacher_labels = list(info.get("labels") or [])
    if settings.labels and list(settings.labels) != teacher_labels:
        raise ValueError(f"--labels {settings.labels} differ from the teacher's labels {teacher_labels}")
    if task.head != "question-answering":
        task.labels = teacher_labels
    if settings.task == "classify":
        teacher_type = info.get("problem_type") or DEFAULT_PROBLEM_TYPE
        if settings.problem_type not in (DEFAULT_PROBLEM_TYPE, teacher_type):
            raise ValueError(f"--problem-type {settings.problem_type}, but the teacher is {teacher_type}")
        task.problem_type = teacher_type
    if settings.task == "ner":  # the KD loss covers the tokens the teacher was trained on
        task.label_all_subtokens = bool(info.get("label_all_subtokens", False))
    return task


def unlabeled_features(path: str, task, tokenizer) -> list[dict]:
    """--unlabeled: one text a line, features without a label (the teacher's outputs are their targets)."""
    lines = check_readable(path).read_text(encoding="utf-8").splitlines()
    examples = [Example(line.strip(), None, None, f"line {n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not examples:
        raise ValueError(f"--unlabeled {path} holds no text")
    return task.features(examples, tokenizer)


# --- one batch -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Distiller:
    """What a training batch needs: the models, the teacher outputs and the loss settings."""

    settings: DistillSettings
    task: object
    teacher: nn.Module
    student: nn.Module
    projections: nn.ModuleList
    layer_map: list[int]
    features: list[dict]
    cache: TeacherCache | None
    pad_id: int
    device: str

    def loss(self, batch: np.ndarray) -> torch.Tensor:
        settings, task, head = self.settings, self.task, self.task.head
        rows = [self.features[j] for j in batch]
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in model_inputs(rows, self.pad_id).items()}
        mask = inputs["attention_mask"]  # (B, T)
        labelled = [_has_target(f) for f in rows]
        targets = {}
        if any(labelled):
            targets = {
                k: torch.from_numpy(v).to(self.device)
                for k, v in task.targets([f for f, has in zip(rows, labelled) if has]).items()
            }
        want_hidden, want_attentions = settings.hidden_weight > 0, settings.attention_weight > 0
        autocast = (
            torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
            if settings.precision == "bf16"
            else None
        )
        with autocast or nullcontext():
            if want_hidden or want_attentions:
                encoded = self.student.bert(
                    **inputs, output_hidden_states=want_hidden, output_attentions=want_attentions
                )
                student_out = self.student.head_output(encoded)
            else:
                encoded, student_out = None, self.student(**inputs)
        teacher_out, teacher_encoded = self.teacher_outputs(batch, inputs, want_hidden, want_attentions)
        problem_type = getattr(task, "problem_type", None)
        token_mask = losses.ner_token_mask(targets["labels"]) if head == losses.TOKEN else None
        kd = losses.soft_target_loss(
            head, problem_type, student_out, teacher_out, settings.temperature, mask, token_mask
        )
        labelled_rows = torch.tensor(labelled, device=self.device)
        hard = losses.hard_label_loss(head, problem_type, student_out, targets, mask, labelled_rows)
        loss = losses.mix(kd, hard, settings.alpha)
        if want_hidden:
            hidden = losses.hidden_state_loss(
                encoded.hidden_states, teacher_encoded.hidden_states, self.layer_map, self.projections, mask
            )
            loss = loss + settings.hidden_weight * hidden
        if want_attentions:
            maps = losses.attention_map_loss(encoded.attentions, teacher_encoded.attentions, self.layer_map, mask)
            loss = loss + settings.attention_weight * maps
        return loss

    def teacher_outputs(self, batch, inputs: dict, want_hidden: bool, want_attentions: bool):
        """(outputs by name (B, ...), the encoder output when internals are wanted): from the cache, or
        the teacher run now (fp32, eval mode) when there is no cache or its internals are needed."""
        if self.cache is not None and not (want_hidden or want_attentions):
            width = inputs["input_ids"].shape[1]
            return {k: v.to(self.device) for k, v in self.cache.batch(batch, width).items()}, None
        with torch.no_grad():
            encoded = self.teacher.bert(**inputs, output_hidden_states=want_hidden, output_attentions=want_attentions)
            out = self.teacher.head_output(encoded)
        return {name: getattr(out, name) for name in OUTPUT_NAMES[self.task.head]}, encoded


def _has_target(feature: dict) -> bool:
    return "label" in feature or "label_ids" in feature or "start_position" in feature


def epoch_batches(settings: DistillSettings, lengths: list[int], epoch: int) -> list[np.ndarray]:
    """The epoch's batches, a pure function of (seed, epoch): what makes resuming exact."""
    rng = np.random.default_rng([settings.seed, epoch])
    if settings.group_by_length:
        return length_grouped_batches(lengths, settings.batch_size, rng)
    return random_batches(len(lengths), settings.batch_size, rng)


# --- the run -------------------------------------------------------------------------------------


def distill(settings: DistillSettings, on_step: Callable[[int], None] | None = None) -> dict:
    """Train the student; `on_step(step)` is called after every optimiser step (tests stop runs with it)."""
    # --- setup: teacher, task, data ---------------------------------------------------------------
    device = seed_and_pick_device(settings)
    out_dir = Path(settings.out)
    teacher_dir = resolve_model_dir(settings.teacher)
    tokenizer = load_tokenizer(resolve_tokenizer_dir(teacher_dir, settings.teacher))
    task = teacher_task(settings, teacher_dir)
    teacher = load_pretrained(teacher_dir, head=task.head)
    teacher.to(device).eval().requires_grad_(False)

    extra = unlabeled_features(settings.unlabeled, task, tokenizer) if settings.unlabeled else []
    train_examples, train_features, train_skipped, eval_examples, eval_features, eval_skipped = load_train_and_eval(
        task, settings, tokenizer, unlabeled=len(extra)
    )
    features = train_features + extra

    # --- student ---------------------------------------------------------------------------------
    teacher_layers = teacher.config.num_hidden_layers
    if settings.student_layers is not None:
        layer_map = parse_layer_map(settings.layer_map) or default_layer_map(teacher_layers, settings.student_layers)
        check_layer_map(layer_map, teacher_layers, settings.student_layers)
        student = student_from_teacher(teacher, layer_map)
        initialisation = {"from": "teacher", "layer_map": layer_map}
    else:
        student = student_from_config(teacher, settings.student_config, settings.student_init, tokenizer)
        layer_map = default_layer_map(teacher_layers, student.config.num_hidden_layers)
        initialisation = {"from": settings.student_init or "random", "config": settings.student_config}
    projections = hidden_projections(student.config, teacher.config, len(layer_map) if settings.hidden_weight else 0)
    student.to(device).train()
    projections.to(device)

    # --- teacher outputs: cached on disk, or computed in each batch ---------------------------------
    teacher_checksum = weights_checksum(teacher_dir)
    cache, cache_key = None, None
    if settings.cache:
        parts = key_parts(
            settings.train, settings.unlabeled, teacher_checksum, tokenizer, task.task_info(), settings.strict
        )
        cache_root = Path(settings.cache_dir) if settings.cache_dir else out_dir / "teacher-cache"
        cache, cache_key, reused = load_or_build(
            cache_root, parts, teacher, features, tokenizer.pad_id, task.head, settings.eval_batch_size, device
        )
        print(f"teacher outputs: {'reused' if reused else 'cached in'} {cache.directory}", file=sys.stderr)
    distiller = Distiller(
        settings, task, teacher, student, projections, layer_map, features, cache, tokenizer.pad_id, device
    )

    # --- optimiser (as `bert finetune`'s), over the student and the hidden-state projections ---------
    params, optimizer, scheduler = adamw_with_schedule(nn.ModuleList([student, projections]), settings, len(features))

    # --- output directory ------------------------------------------------------------------------
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_dir)
    write_json(out_dir / "task.json", {**task.task_info(), "train_file": str(Path(settings.train).resolve())})
    checkpoints = out_dir / "checkpoints"
    labels = list(getattr(task, "labels", ()) or ())
    main_metric = task.main_metric

    # --- state: fresh, or from the latest checkpoint ----------------------------------------------
    state = {
        "epoch": 1, "position": 0, "step": 0, "loss_sum": 0.0, "loss_count": 0,
        "best_value": -math.inf, "stale_epochs": 0,
    }  # fmt: skip
    record = None
    resume_from = latest_checkpoint(checkpoints) if settings.resume else None
    if settings.resume and resume_from is None:
        print(f"--resume: no checkpoint under {checkpoints}; starting afresh", file=sys.stderr)
    if resume_from is not None:
        saved = load_training_state(resume_from)
        student.load_state_dict(load_pretrained(resume_from, head=task.head).state_dict())
        projections.load_state_dict(saved["projections"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_rng_state(saved["rng"])
        state = saved["progress"]
        record = json.loads(saved["record"])
        print(f"resuming from {resume_from} (epoch {state['epoch']}, batch {state['position']})", file=sys.stderr)
    if record is None:
        teacher_eval = None
        if eval_examples:
            teacher_eval = evaluate_model(teacher, task, eval_examples, eval_features, tokenizer, settings, device)
        record = metrics_record(
            task,
            settings,
            train_examples,
            train_skipped,
            eval_examples,
            eval_skipped,
            unlabeled_examples=len(extra),
            teacher_eval=teacher_eval,
        )

    def save_progress() -> None:
        training_state = {
            "projections": projections.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng_state(),
            "progress": dict(state),
            "record": json.dumps(record, default=str),
        }
        save_checkpoint(checkpoints, state["step"], student, training_state)

    # --- loop ------------------------------------------------------------------------------------
    lengths = [len(f["input_ids"]) for f in features]
    started = time.perf_counter()
    while state["epoch"] <= settings.epochs:
        epoch = state["epoch"]
        epoch_start = time.perf_counter()
        batches = epoch_batches(settings, lengths, epoch)
        bar = tqdm(
            total=len(batches),
            initial=state["position"],
            desc=f"epoch {epoch}/{settings.epochs}",
            unit="batch",
            dynamic_ncols=True,
        )
        for i in range(state["position"], len(batches)):
            loss = distiller.loss(batches[i])
            (loss / settings.grad_accum).backward()
            state["loss_sum"] += loss.item()
            state["loss_count"] += 1
            bar.update(1)
            if (i + 1) % settings.grad_accum == 0 or i + 1 == len(batches):
                if settings.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                state["position"] = i + 1
                if settings.save_every and state["step"] % settings.save_every == 0:
                    save_progress()
                if on_step is not None:
                    on_step(state["step"])
            if i % 20 == 0:
                bar.set_postfix(
                    loss=f"{state['loss_sum'] / state['loss_count']:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}"
                )
        bar.close()
        entry = {
            "epoch": epoch,
            "train_loss": state["loss_sum"] / max(1, state["loss_count"]),
            "train_seconds": time.perf_counter() - epoch_start,
        }
        improved = True
        if eval_examples:
            metrics = evaluate_model(student, task, eval_examples, eval_features, tokenizer, settings, device)
            entry["eval"] = metrics
            improved = metrics[main_metric] > state["best_value"]
            print(
                f"epoch {epoch}: train loss {entry['train_loss']:.4f}, eval {main_metric} {metrics[main_metric]:.4f}",
                file=sys.stderr,
            )
        record["history"].append(entry)
        if improved:
            state["best_value"] = entry["eval"][main_metric] if eval_examples else -math.inf
            state["stale_epochs"] = 0
            record["best_epoch"], record["best"] = epoch, entry.get("eval")
            save_best_model(student, out_dir, entry, labels)
        else:
            state["stale_epochs"] += 1
        record["train_seconds"] = time.perf_counter() - started
        write_json(out_dir / "metrics.json", record)
        state.update(epoch=epoch + 1, position=0, loss_sum=0.0, loss_count=0)
        if settings.early_stopping and state["stale_epochs"] >= settings.early_stopping:
            print(f"early stop: {state['stale_epochs']} epochs without a better {main_metric}", file=sys.stderr)
            break

    write_json(
        out_dir / "distill.json",
        {
            "teacher": {
                "path": str(teacher_dir.resolve()),
                "weights_sha256": teacher_checksum,
                **describe_student(teacher),
            },
            "student": {**describe_student(student), "initialisation": initialisation},
            "losses": {
                "temperature": settings.temperature,
                "alpha": settings.alpha,
                "hidden_weight": settings.hidden_weight,
                "attention_weight": settings.attention_weight,
                "layer_map": layer_map,
            },
            "teacher_cache": {
                "used": cache is not None,
                "key": cache_key,
                "directory": str(cache.directory) if cache else None,
            },
            "unlabeled_examples": len(extra),
            "teacher_eval": record["teacher_eval"],
            "student_eval": record["best"],
            "best_epoch": record["best_epoch"],
        },
    )
    return record
