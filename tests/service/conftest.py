"""Service fixtures: a fake backend for the batcher, tiny real bundles, a test client over them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

TASKS = ("sequence-classification", "token-classification", "question-answering", "fill-mask", "embedding")


class FakeBackend:
    """Records every batch; output = payload * 10; optionally blocks until released or sleeps."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None, fail_on=None):
        self.batches: list[list] = []
        self.delay = delay
        self.gate = gate
        self.fail_on = fail_on
        self.started = threading.Event()

    def run(self, batch: list) -> list:
        self.batches.append(list(batch))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in batch:
            raise RuntimeError("backend exploded")
        return [p * 10 for p in batch]


@pytest.fixture
def fake_backend_cls():
    return FakeBackend


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    """One fp32 bundle per task plus an int8 classifier (built once per test session, ~20 s)."""
    pytest.importorskip("torch")
    from tests.helpers.bundles import make_tiny_bundle

    root = tmp_path_factory.mktemp("bundles")
    bundles = {task: make_tiny_bundle(root, task) for task in TASKS}
    bundles["int8"] = make_tiny_bundle(root, "sequence-classification", precision="int8-dynamic", name="tiny-cls-int8")
    return bundles


def make_settings(bundles, **overrides):
    from service.config import ServiceSettings

    return ServiceSettings(bundles=[str(p) for p in bundles], _env_file=None, **overrides)


@pytest.fixture(scope="session")
def client(tiny_bundles):
    """A test client over every tiny bundle (the fp32 classifier first, so it is the default)."""
    from fastapi.testclient import TestClient

    from service.main import create_app

    order = [tiny_bundles[t] for t in TASKS] + [tiny_bundles["int8"]]
    app = create_app(make_settings(order, max_inputs_per_request=64, max_body_bytes=200_000))
    with TestClient(app) as c:
        yield c
