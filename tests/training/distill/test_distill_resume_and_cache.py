"""A cached and an uncached run train the same student; a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST
from safetensors.torch import load_file

from core.args import parse_dataclass
from training.distill.settings import DistillSettings
from training.distill.train import distill


def _settings(teacher, data_dir, out, *extra) -> DistillSettings:
    argv = ["classify", "--teacher", str(teacher), "--train", str(data_dir / "sst2-train.tsv"), "--out", str(out)]
    argv += ["--student-layers", "2", *FAST, *extra]
    return parse_dataclass(DistillSettings, argv, "bert distill", positional=("task",))


def _weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def test_cached_and_uncached_teacher_outputs_train_the_same_student(classify_teacher, data_dir, tmp_path):
    cache_dir = tmp_path / "shared-cache"
    cached = distill(
        _settings(classify_teacher, data_dir, tmp_path / "a", "--epochs", "2", "--cache-dir", str(cache_dir))
    )
    again = distill(
        _settings(classify_teacher, data_dir, tmp_path / "b", "--epochs", "2", "--cache-dir", str(cache_dir))
    )
    uncached = distill(_settings(classify_teacher, data_dir, tmp_path / "c", "--epochs", "2", "--no-cache"))
    assert len(list(cache_dir.iterdir())) == 1  # the second run reused the first one's cache
    key = json.loads((tmp_path / "b" / "distill.json").read_text())["teacher_cache"]["key"]
    meta = json.loads((cache_dir / key / "meta.json").read_text())
    assert meta["features"] == 32 and meta["task"] == "sequence-classification"
    a, b, c = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    # Exactly equal: the cache holds the teacher's fp32 logits of each example alone (padding never
    # changes a row: padded positions are packed away before every linear layer) and the uncached
    # teacher computes the same rows; on this CPU kernel a row's result does not depend on its batch.
    for name in a:
        assert torch.equal(a[name], b[name]), name
        assert torch.equal(a[name], c[name]), name
    assert [h["train_loss"] for h in cached["history"]] == [h["train_loss"] for h in uncached["history"]]
    assert again["history"][-1]["train_loss"] == cached["history"][-1]["train_loss"]


class Interrupted(Exception):
    pass


def test_resume_after_an_interruption_reaches_the_uninterrupted_student(classify_teacher, data_dir, tmp_path):
    extra = ["--epochs", "2", "--save-every", "3", "--eval", str(data_dir / "sst2-dev.tsv")]
    straight = distill(_settings(classify_teacher, data_dir, tmp_path / "straight", *extra))

    def stop_at_step_5(step: int) -> None:
        if step == 5:  # epoch 2, after the checkpoint of step 3 (epoch 1 has 4 batches)
            raise Interrupted

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        distill(_settings(classify_teacher, data_dir, out, *extra), on_step=stop_at_step_5)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003"]
    resumed = distill(_settings(classify_teacher, data_dir, out, *extra, "--resume"))
    reference, weights = _weights(tmp_path / "straight"), _weights(out)
    for name in reference:
        assert torch.equal(reference[name], weights[name]), name
    strip = [{k: v for k, v in h.items() if k != "train_seconds"} for h in straight["history"]]
    assert [{k: v for k, v in h.items() if k != "train_seconds"} for h in resumed["history"]] == strip
    assert resumed["best_epoch"] == straight["best_epoch"]
