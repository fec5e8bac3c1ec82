"""AppState: per-device defaults of the batching knobs the settings leave unset."""

from __future__ import annotations

from service.config import ServiceSettings
from service.state import AppState, default_intra_op_threads


def _state(**overrides) -> AppState:
    return AppState(ServiceSettings(_env_file=None, **overrides))


def test_cpu_defaults_two_workers_and_tight_length_groups():
    config = _state().batching_config("cpu")
    assert (config.workers, config.overhead_tokens) == (2, 16)


def test_cuda_defaults_one_worker_and_fuller_batches():
    config = _state().batching_config("cuda")
    assert (config.workers, config.overhead_tokens) == (1, 128)


def test_settings_override_the_device_defaults():
    config = _state(backend_workers=3, batch_overhead_tokens=0).batching_config("cuda")
    assert (config.workers, config.overhead_tokens) == (3, 0)


def test_intra_op_threads_split_the_cores_but_never_drop_to_zero(monkeypatch):
    monkeypatch.setattr("service.state.usable_cores", lambda: 2)
    assert default_intra_op_threads(2) == 1
    monkeypatch.setattr("service.state.usable_cores", lambda: 16)
    assert (default_intra_op_threads(1), default_intra_op_threads(2)) == (15, 7)


def test_usable_cores_follow_the_affinity_mask(monkeypatch):
    from service.state import usable_cores

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cores() == 3
