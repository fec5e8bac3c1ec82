"""Atomic training checkpoints in the Hugging Face layout, plus everything `--resume` needs.

    RUN_DIR/checkpoints/step-00001000/
        config.json, model.safetensors   # `model.save_pretrained`: loads in our code and in transformers
        vocab.txt, tokenizer.json, ...   # copied from the data's tokenizer when known, for fine-tuning
        training_state.pt                # optimizer, scheduler, grad scaler, RNG states, data position

A checkpoint is written into `.tmp-step-XXXXXXXX/` and renamed into place only when every
file is on disk, so a run killed mid-write leaves the previous checkpoint as the latest good
one; the leftover temporary directory is ignored and removed by the next save.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model import save_pretrained

STATE_FILE = "training_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).exists() and (path / "model.safetensors").exists():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1][1] if checkpoints else None


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    training_state: dict,
    keep: int = 3,
    extra_files: tuple[Path, ...] = (),
) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep` checkpoints."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    if final.exists():  # already saved at this step (e.g. a periodic save, then Ctrl-C)
        return final
    for stale in root.glob(".tmp-step-*"):  # left by a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{step_dir_name(step)}"
    tmp.mkdir()
    save_pretrained(model, tmp)
    for extra in extra_files:
        shutil.copy2(extra, tmp / extra.name)
    torch.save(training_state, tmp / STATE_FILE)
    _fsync_tree(tmp)
    os.rename(tmp, final)  # atomic on POSIX: the checkpoint appears complete or not at all
    _fsync_dir(root)
    prune_checkpoints(root, keep)
    return final


def prune_checkpoints(root: Path, keep: int) -> None:
    checkpoints = list_checkpoints(root)
    for _, path in checkpoints[: max(0, len(checkpoints) - max(1, keep))]:
        shutil.rmtree(path, ignore_errors=True)


def load_training_state(checkpoint: str | Path, map_location: torch.device | str = "cpu") -> dict:
    path = Path(checkpoint) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{checkpoint} is not a training checkpoint: {STATE_FILE} is missing")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read {path}: {err}") from err


def capture_rng_state() -> dict:
    """Python, NumPy, torch (CPU) and CUDA generator states, in a form `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": np.asarray(n["key"], dtype=np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
