"""The teacher's outputs on the training features, computed once and memory-mapped from disk.

    CACHE_DIR/<key>/                 CACHE_DIR defaults to OUT/teacher-cache
        meta.json                    key, task, feature count, what the key was made of
        logits.npy                   classify: (N, L); ner: (total tokens, L), the features one after another
        start_logits.npy, end_logits.npy   qa: (total tokens,)
        offsets.npy                  ner, qa: (N + 1,) int64; feature i is rows offsets[i]:offsets[i + 1]

The key is a sha256 over the training (and --unlabeled) file's bytes, the teacher's weights and
vocabulary, and the options that change the features (max_seq_len, doc_stride, labels, ...): any
change makes a new directory. A cache is written into a temporary directory and renamed into place,
so a killed run never leaves a half-written one. The outputs are fp32, the teacher in eval mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from core.bundle import TOKEN_LEVEL_TASKS
from model.checkpoint import WEIGHT_FILES
from training.finetune.predictor import TorchBackend, predict_features

OUTPUT_NAMES = {
    "sequence-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
}
# task.json fields that do not change the features (prediction-time settings only)
NOT_IN_KEY = ("n_best", "max_answer_len", "null_threshold")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_checksum(model_dir: Path) -> str:
    """sha256 of the model's weight file (model.safetensors or pytorch_model.bin)."""
    for name in WEIGHT_FILES:
        if (model_dir / name).exists():
            return file_sha256(model_dir / name)
    raise FileNotFoundError(f"no weights in {model_dir}: expected one of {', '.join(WEIGHT_FILES)}")


def cache_key(parts: dict) -> str:
    """sha256 over the JSON of `parts` (file checksums and feature options)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def key_parts(train_file, unlabeled_file, teacher_checksum: str, tokenizer, task_info: dict, strict: bool) -> dict:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items())).encode()
    return {
        "train_file": file_sha256(train_file),
        "unlabeled_file": file_sha256(unlabeled_file) if unlabeled_file else None,
        "teacher_weights": teacher_checksum,
        "vocabulary": hashlib.sha256(vocab).hexdigest(),
        "features": {k: v for k, v in task_info.items() if k not in NOT_IN_KEY},
        "strict": strict,
    }


class TeacherCache:
    """Read side: the outputs of a batch of features, padded to the batch's length."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        self.names = OUTPUT_NAMES[self.meta["task"]]
        self.token_level = self.meta["task"] in TOKEN_LEVEL_TASKS
        self.arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in self.names}
        self.offsets = np.load(directory / "offsets.npy") if self.token_level else None

    def __len__(self) -> int:
        return int(self.meta["features"])

    def batch(self, indices, width: int) -> dict[str, torch.Tensor]:
        """Per output name: (B, L) for classify, (B, width[, L]) for ner / qa, zeros past a feature's end."""
        out = {}
        for name, array in self.arrays.items():
            if not self.token_level:
                out[name] = torch.from_numpy(np.array(array[indices], dtype=np.float32))  # (B, L)
                continue
            padded = np.zeros((len(indices), width, *array.shape[1:]), dtype=np.float32)  # (B, T[, L])
            for row, i in enumerate(indices):
                begin, end = self.offsets[i], self.offsets[i + 1]
                padded[row, : end - begin] = array[begin:end]
            out[name] = torch.from_numpy(padded)
        return out


def build_cache(directory: Path, key: str, parts: dict, head: str, outputs: list[dict[str, np.ndarray]]) -> None:
    """Write `outputs` (one dict per feature) as memory-mappable .npy files, atomically."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    token_level = head in TOKEN_LEVEL_TASKS
    for name in OUTPUT_NAMES[head]:
        rows = [o[name] for o in outputs]
        if token_level:
            lengths = [len(r) for r in rows]
            shape = (sum(lengths), *rows[0].shape[1:])
        else:
            shape = (len(rows), *rows[0].shape)
        array = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.float32, shape=shape)
        array[:] = np.concatenate(rows) if token_level else np.stack(rows)
        array.flush()
        del array
    if token_level:
        np.save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum([len(o[OUTPUT_NAMES[head][0]]) for o in outputs])]))
    meta = {"key": key, "task": head, "features": len(outputs), "made_of": parts}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    try:
        os.rename(tmp, directory)  # atomic: the cache appears complete or not at all
    except OSError:  # another run finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (directory / "meta.json").exists():
            raise


def load_or_build(
    cache_root: Path, parts: dict, teacher, features: list[dict], pad_id: int, head: str, batch_size: int, device
) -> tuple[TeacherCache, str, bool]:
    """(cache, key, reused?): the cached outputs for `parts`, computed now when missing."""
    key = cache_key(parts)
    directory = cache_root / key
    reused = (directory / "meta.json").exists()
    if not reused:
        backend = TorchBackend(teacher, device, "fp32")
        outputs = predict_features(backend, features, pad_id, head in TOKEN_LEVEL_TASKS, batch_size)
        build_cache(directory, key, parts, head, outputs)
    cache = TeacherCache(directory)
    if len(cache) != len(features):
        raise ValueError(f"teacher cache {directory} holds {len(cache)} features, the data {len(features)}")
    return cache, key, reused
