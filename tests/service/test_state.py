"""AppState: per-device defaults of the batching knobs the settings leave unset; start-up does each thing once."""

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


def test_start_up_hashes_and_opens_each_bundle_once(tiny_bundles, monkeypatch):
    """Loading, verifying and warming up a bundle reads each file's sha256 once and makes one session."""
    import core.bundle
    from service.state import AppState
    from tests.service.conftest import make_settings

    hashed, sessions = [], []
    real_hash, real_session = core.bundle.sha256_file, core.bundle.create_session
    monkeypatch.setattr(core.bundle, "sha256_file", lambda path: hashed.append(path) or real_hash(path))
    monkeypatch.setattr(core.bundle, "create_session", lambda *a, **k: sessions.append(a[0]) or real_session(*a, **k))
    bundles = [tiny_bundles["sequence-classification"], tiny_bundles["question-answering"]]
    state = AppState(make_settings(bundles, verify_bundles=True))
    try:
        state.load()
    finally:
        state.close()
    assert sorted(hashed) == sorted(b / name for b in bundles for name in ("model.onnx", "tokenizer.json"))
    assert sorted(sessions) == sorted(b / "model.onnx" for b in bundles)
