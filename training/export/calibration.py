"""Calibration inputs for static int8: a seeded sample of the fine-tuning data, one input at a time.

The file is the one fine-tuning read (task.json's `train_file`) unless `--calibration FILE` names
another, in the same format: classification TSV/CSV/JSONL, CoNLL for NER, SQuAD JSON for QA, and
for fill-mask and embedding bundles plain text, one text per line (as `--eval`). Each example is
run alone, without padding, so the ranges the quantizer calibrates are those of real tokens only.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np

from core.bundle import sha256_file
from training.export.parity import Feeds
from training.export.source import ModelSource

CALIBRATION_EXAMPLES = 512  # sampled examples; MiniLM SST-2 measured with 512 (benchmarks/batch_invariance.py)
CALIBRATION_SEED = 0


class CalibrationError(ValueError):
    """No usable calibration data; the message says what to pass instead."""


def calibration_file(source: ModelSource, given: str | Path | None) -> tuple[Path, str]:
    """(file, where it came from): `given`, else the training file task.json records."""
    if given is not None:
        path, origin = Path(given), "--calibration"
    else:
        recorded = source.task_info.get("train_file")
        if not recorded:
            raise CalibrationError(
                f"int8 is calibrated on the fine-tuning data, but {source.directory / 'task.json'} records no "
                "train_file: pass --calibration FILE (the fine-tuning data format) or --precision fp32"
            )
        path, origin = Path(recorded), "task.json train_file"
        if not path.is_absolute():
            path = source.directory / path
    if not path.is_file():
        raise CalibrationError(
            f"calibration file {path} ({origin}) does not exist: pass --calibration FILE or --precision fp32"
        )
    return path, origin


def calibration_inputs(
    source: ModelSource, path: Path, origin: str, limit: int = CALIBRATION_EXAMPLES, seed: int = CALIBRATION_SEED
) -> tuple[list[Feeds], dict]:
    """One (1, T) feed per feature of a seeded sample of `limit` examples, and the record for bundle.json."""
    rng = random.Random(seed)
    if source.task in ("fill-mask", "embedding"):
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = rng.sample(texts, min(limit, len(texts)))
        n_examples = len(texts)
        encodings = source.tokenizer.encode_batch(texts, max_length=source.max_seq_len)
        features = [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encodings]
    else:
        from training.export.evaluation import task_object

        task = task_object(source)
        examples, _ = task.read(path, require_labels=False, for_training=False)
        examples = [_unlabelled(e) for e in rng.sample(examples, min(limit, len(examples)))]
        n_examples = len(examples)
        features = task.features(examples, source.tokenizer)
    if not features:
        raise CalibrationError(f"calibration file {path} ({origin}) holds no usable example for {source.task}")
    feeds = []
    for feature in features:
        ids = np.asarray([feature["input_ids"]], dtype=np.int64)  # (1, T)
        type_ids = feature.get("token_type_ids") or [0] * ids.shape[1]
        feeds.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.asarray([type_ids], dtype=np.int64),  # (1, T)
            }
        )
    record = {
        "file": str(path.resolve()),
        "sha256": sha256_file(path),
        "from": origin,
        "examples": n_examples,
        "inputs": len(feeds),  # QA and NER windows: one example can give several
        "seed": seed,
    }
    return feeds, record


def _unlabelled(example):
    """The inputs only: a label the model does not know (another file's label names) must not matter here."""
    if hasattr(example, "label"):  # classification
        return dataclasses.replace(example, label=None)
    if hasattr(example, "tags"):  # NER
        return dataclasses.replace(example, tags=[])
    return example  # QA: answers only place training targets
