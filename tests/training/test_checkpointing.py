"""Atomic checkpoints: round trip, pruning, RNG states, and a write killed half-way."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from model import build_model, load_pretrained
from training import checkpointing

REPO = Path(__file__).resolve().parents[2]


def state(step: int) -> dict:
    return {"step": step, "data_position": [0, step], "rng": [checkpointing.capture_rng_state()]}


def test_round_trip_in_hf_layout_and_last_k_kept(tmp_path, tiny_config):
    model = build_model(tiny_config, "pretraining")
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        checkpointing.save_checkpoint(root, step, model, state(step), keep=2)
    assert [s for s, _ in checkpointing.list_checkpoints(root)] == [3, 4]
    latest = checkpointing.latest_checkpoint(root)
    assert latest.name == "step-00000004"
    assert checkpointing.load_training_state(latest)["data_position"] == [0, 4]
    loaded = load_pretrained(latest, head="pretraining")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # Saving the same step twice (periodic save, then Ctrl-C) keeps the first.
    assert checkpointing.save_checkpoint(root, 4, model, state(99), keep=2) == latest
    assert checkpointing.load_training_state(latest)["step"] == 4


def test_rng_states_restore_every_generator():
    snapshot = checkpointing.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(1)
    checkpointing.restore_rng_state(snapshot)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_leftover_temporary_directory_is_ignored_then_removed(tmp_path, tiny_config):
    model = build_model(tiny_config, "pretraining")
    root = tmp_path / "checkpoints"
    checkpointing.save_checkpoint(root, 1, model, state(1))
    (root / ".tmp-step-00000002").mkdir()
    (root / ".tmp-step-00000002" / "model.safetensors").write_bytes(b"partial")
    assert checkpointing.latest_checkpoint(root).name == "step-00000001"
    checkpointing.save_checkpoint(root, 3, model, state(3))
    assert not (root / ".tmp-step-00000002").exists()


def test_process_killed_mid_write_never_replaces_the_last_good_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from model import BertConfig, build_model
        from training import checkpointing
        model = build_model(BertConfig.preset("tiny", vocab_size=100, max_position_embeddings=64), "pretraining")
        root = {str(root)!r}
        checkpointing.save_checkpoint(root, 1, model, {{"step": 1}})
        real_save = torch.save
        def dying_save(obj, path, *args, **kwargs):
            with open(path, "wb") as f:
                f.write(b"half a file")
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        checkpointing.save_checkpoint(root, 2, model, {{"step": 2}})
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (root / ".tmp-step-00000002" / "model.safetensors").exists()  # it really died mid-write
    latest = checkpointing.latest_checkpoint(root)
    assert latest.name == "step-00000001"
    assert checkpointing.load_training_state(latest)["step"] == 1
    load_pretrained(latest, head="pretraining")
