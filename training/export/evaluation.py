"""The task metric of a bundle's graph and of the fp32 PyTorch model on an evaluation file.

Classification, NER and QA files are read and scored by the fine-tuning tasks in
`training/tasks` (the same readers and metrics `bert finetune` and `bert evaluate` use).
fill-mask reads plain text (one text per line) and scores top-1 accuracy on every 7th real
token, masked; embedding reads plain text and reports the cosine between the two models'
embeddings (an agreement figure: there is no label to score against).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from core.batches import ModelInput, predict_inputs
from core.bundle import TOKEN_LEVEL_TASKS
from training.export.parity import Runner
from training.export.source import ModelSource

BATCH_SIZE = 32
MASK_EVERY = 7  # fill-mask: mask one real token in seven, deterministically


def task_object(source: ModelSource):
    """The fine-tuning task object (reader, features, metric) the model directory was trained as."""
    from core.inference.qa import QaWindows
    from training.tasks.classification import ClassificationTask
    from training.tasks.ner import NerTask
    from training.tasks.qa import QaTask

    cls = {
        "sequence-classification": ClassificationTask,
        "token-classification": NerTask,
        "question-answering": QaTask,
    }[source.task]
    info = dict(source.task_info)
    if "doc_stride" in info and cls is NerTask:
        info["stride"] = info.pop("doc_stride")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {k: v for k, v in info.items() if k in names and v is not None}
    kwargs["max_seq_len"] = source.max_seq_len
    if "labels" in names and source.labels is not None and source.task != "question-answering":
        kwargs["labels"] = list(source.labels)
    if source.problem_type and "problem_type" in names:
        kwargs["problem_type"] = source.problem_type
    if cls is QaTask:  # the windows the service cuts for this bundle
        windows = QaWindows.from_task_config(source.max_seq_len, info)
        kwargs["doc_stride"], kwargs["max_query_len"] = windows.doc_stride, windows.max_query_len
    return cls(**kwargs)


def run_features(run: Runner, features: list[dict], pad_id: int, token_level: bool) -> list[dict]:
    """Outputs for each feature, through the batching every other caller uses (core.batches)."""
    inputs = [ModelInput(f["input_ids"], f.get("token_type_ids") or []) for f in features]
    return predict_inputs(SimpleNamespace(run=run), inputs, pad_id, token_level, BATCH_SIZE)


def _scalars(metrics: dict) -> dict:
    """Top-level numbers only: per-class tables and confusion matrices stay out of bundle.json."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def evaluate(source: ModelSource, eval_file: Path, bundle_run: Runner, fp32_run: Runner, limit: int | None) -> dict:
    """{"file", "examples", "main_metric", "bundle": {...}, "fp32": {...}, "difference": bundle - fp32}."""
    eval_file = Path(eval_file)
    if not eval_file.is_file():
        raise FileNotFoundError(f"evaluation file {eval_file} does not exist")
    tokenizer = source.tokenizer
    if source.task in ("fill-mask", "embedding"):
        texts = [line.strip() for line in eval_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = texts[:limit] if limit else texts
        if not texts:
            raise ValueError(f"{eval_file} holds no text lines")
        encodings = tokenizer.encode_batch(texts, max_length=source.max_seq_len)
        features = [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encodings]
        if source.task == "fill-mask":
            return _fill_mask(eval_file, features, tokenizer, bundle_run, fp32_run)
        return _embedding(eval_file, features, tokenizer.pad_id, bundle_run, fp32_run)
    task = task_object(source)
    examples, problems = task.read(eval_file)
    examples = examples[:limit] if limit else examples
    if not examples:
        raise ValueError(f"{eval_file}: no usable examples ({len(problems)} skipped)")
    if hasattr(task, "drop_unknown_labels") and getattr(task, "labels", None):
        examples = task.drop_unknown_labels(examples, problems)
    features = task.features(examples, tokenizer)
    scores = {}
    for key, run in (("bundle", bundle_run), ("fp32", fp32_run)):
        token_level = source.task in TOKEN_LEVEL_TASKS
        outputs = run_features(run, features, tokenizer.pad_id, token_level)
        scores[key] = _scalars(task.score(examples, features, outputs))
    main = task.main_metric
    return {
        "file": str(eval_file),
        "examples": len(examples),
        "skipped": len(problems),
        "main_metric": main,
        "bundle": scores["bundle"],
        "fp32": scores["fp32"],
        "difference": scores["bundle"][main] - scores["fp32"][main],
    }


def _fill_mask(eval_file, features, tokenizer, bundle_run, fp32_run) -> dict:
    targets = []
    for f in features:
        ids = list(f["input_ids"])
        positions = [p for p in range(1, len(ids) - 1) if p % MASK_EVERY == 0] or [1]
        targets.append([(p, ids[p]) for p in positions if p < len(ids) - 1])
        for p, _ in targets[-1]:
            ids[p] = tokenizer.mask_id
        f["input_ids"] = ids
    scores = {}
    for key, run in (("bundle", bundle_run), ("fp32", fp32_run)):
        outputs = run_features(run, features, tokenizer.pad_id, token_level=True)
        hits = [int(out["logits"][p].argmax() == t) for out, tgt in zip(outputs, targets) for p, t in tgt]
        scores[key] = {"top1_accuracy": float(np.mean(hits)), "masked_tokens": len(hits)}
    return {
        "file": str(eval_file),
        "examples": len(features),
        "main_metric": "top1_accuracy",
        "bundle": scores["bundle"],
        "fp32": scores["fp32"],
        "difference": scores["bundle"]["top1_accuracy"] - scores["fp32"]["top1_accuracy"],
    }


def _embedding(eval_file, features, pad_id, bundle_run, fp32_run) -> dict:
    a = np.stack([o["embeddings"] for o in run_features(bundle_run, features, pad_id, False)])  # (N, H)
    b = np.stack([o["embeddings"] for o in run_features(fp32_run, features, pad_id, False)])  # (N, H)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)  # (N,)
    return {
        "file": str(eval_file),
        "examples": len(features),
        "main_metric": "cosine_to_fp32",
        "bundle": {"cosine_to_fp32_mean": float(cos.mean()), "cosine_to_fp32_min": float(cos.min())},
        "fp32": None,
        "difference": None,
        "note": "agreement with the fp32 PyTorch embeddings; no labels to score",
    }
