"""torchrun environment parsing; the 2-process gloo run itself is in test_pretrain.py."""

import pytest

from training import distributed


def test_world_of_one_without_torchrun(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.env_info()
    assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)
    distributed.setup(info, "cpu")  # no process group for a world of one
    assert distributed.all_gather_objects("x") == ["x"]


def test_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    info = distributed.env_info()
    assert (info.rank, info.local_rank, info.world_size, info.is_main) == (3, 1, 4, False)


def test_bad_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RANK", "4")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="outside WORLD_SIZE"):
        distributed.env_info()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        distributed.setup(distributed.env_info(), "cpu")


def test_backend_per_device():
    assert distributed.backend_for("cuda") == "nccl"
    assert distributed.backend_for("cpu") == "gloo"
