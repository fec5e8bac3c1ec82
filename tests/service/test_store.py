"""The model store: layout, first-use loading, LRU unloading, hot swaps and refused versions, on tiny real bundles."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.config import ServiceSettings
from service.main import create_app
from service.state import AppState
from service.store import ModelStore, natural_key

LABELS = {"1": {"negative", "positive"}, "2": {"bad", "good"}}  # what each version of the classifier answers
KEY = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory) -> dict[str, Path]:
    """Two versions of a tiny classifier that differ in their labels, so each answer names its version."""
    pytest.importorskip("torch")
    from tests.helpers.bundles import make_tiny_bundle

    root = tmp_path_factory.mktemp("classifiers")
    return {
        version: make_tiny_bundle(root / version, "sequence-classification", labels=sorted(labels), name="tiny")
        for version, labels in LABELS.items()
    }


def put(store: Path, where: str, bundle: Path) -> Path:
    """Copy `bundle` into the store at `where` (NAME/VERSION or NAME) the way an operator publishes one:
    into a hidden directory first, then renamed into place, so no scan sees half a bundle."""
    target = store / where
    staging = target.parent / f".staging-{target.name}"
    shutil.copytree(bundle, staging)
    staging.rename(target)
    return target


def store_app(store: Path, **settings):
    settings = ServiceSettings(_env_file=None, model_store=store, warmup=False, **settings)
    return create_app(settings)


def classify(client, model: str = "tiny", **kw):
    return client.post("/v1/classify", json={"inputs": "a good film", "model": model}, **kw)


def models(client, **kw) -> dict[str, dict]:
    return {m["name"]: m for m in client.get("/v1/models", **kw).json()["models"]}


@pytest.fixture
def closed(monkeypatch) -> list:
    """The engines whose batchers the registry closed, in order."""
    engines, real = [], AppState._close_engine

    def spy(self, engine, timeout=None):
        real(self, engine, timeout)
        engines.append(engine)

    monkeypatch.setattr(AppState, "_close_engine", spy)
    return engines


class LogLines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    handler, logger = LogLines(), logging.getLogger("service")  # it does not propagate to caplog
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def wait_for(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


# --- the layout on disk ----------------------------------------------------------------------


def test_versions_sort_naturally():
    assert sorted(["10", "9", "v10", "2", "v9", "1"], key=natural_key) == ["1", "2", "9", "10", "v9", "v10"]


def test_scan_finds_versions_unversioned_and_variant_directories(tmp_path, classifiers):
    store = tmp_path / "store"
    for version in ("1", "2", "10"):
        put(store, f"versioned/{version}", classifiers["1"])
    put(store, "plain", classifiers["1"])
    put(store, "variants/fp32", classifiers["1"])  # precision-named sub-directories: one bundle's variants
    (store / "versioned" / "11").mkdir()  # no bundle.json yet: an export in progress
    (store / ".hidden").mkdir()
    put(store, "bad name!", classifiers["1"])

    found, problems = ModelStore(store).scan()
    assert {name: [v.name for v in versions] for name, versions in found.items()} == {
        "plain": [None],
        "variants": [None],
        "versioned": ["10", "2", "1"],
    }
    assert found["versioned"][0].manifest.task == "sequence-classification"
    assert found["versioned"][0].model_bytes == (store / "versioned/10/model.onnx").stat().st_size
    assert len(problems) == 1 and "bad name!" in problems[0]


# --- loading on first use and LRU unloading ---------------------------------------------------


def test_models_load_on_first_use_and_the_least_recently_used_unloads(tmp_path, classifiers, closed):
    store = tmp_path / "store"
    for name in ("a", "b"):
        put(store, f"{name}/1", classifiers["1"])
    app = store_app(store, max_loaded_models=1)
    with TestClient(app) as c:
        listed = models(c)
        assert [m["loaded"] for m in listed.values()] == [False, False]
        assert listed["a"]["version"] == "1" and listed["a"]["provider"] is None and listed["a"]["default"] is True

        r = classify(c, "a")
        assert r.status_code == 200 and r.json()["model"] == "a" and r.json()["model_version"] == "1"
        first_a = app.state.bertkit.registry.engines["a"]
        assert classify(c, "b").status_code == 200
        listed = models(c)
        assert (listed["a"]["loaded"], listed["b"]["loaded"]) == (False, True)
        wait_for(lambda: closed == [first_a])  # its batcher is closed, not only forgotten

        assert classify(c, "a").status_code == 200  # loads again, and b makes room
        assert list(app.state.bertkit.registry.engines) == ["a"]
        r = c.post("/v1/classify", json={"inputs": "no model named"})  # the task's default: the first by name
        assert r.status_code == 200 and r.json()["model"] == "a"


def test_the_memory_budget_unloads_the_least_recently_used_not_the_oldest(tmp_path, classifiers):
    store = tmp_path / "store"
    for name in ("a", "b", "c"):
        put(store, f"{name}/1", classifiers["1"])
    size = (classifiers["1"] / "model.onnx").stat().st_size
    app = store_app(store, max_loaded_model_bytes=int(2.5 * size))  # two models fit, not three
    with TestClient(app) as c:
        for name in ("a", "b", "a", "c"):
            assert classify(c, name).status_code == 200
        assert sorted(app.state.bertkit.registry.engines) == ["a", "c"]
        assert {n: m["loaded"] for n, m in models(c).items()} == {"a": True, "b": False, "c": True}


def test_unknown_model_and_wrong_task_do_not_load_anything(tmp_path, classifiers):
    store = tmp_path / "store"
    put(store, "tiny/1", classifiers["1"])
    app = store_app(store)
    with TestClient(app) as c:
        r = classify(c, "nope")
        assert r.status_code == 404 and "tiny (sequence-classification, not loaded)" in r.json()["error"]["message"]
        r = c.post("/v1/ner", json={"inputs": "x", "model": "tiny"})
        assert r.status_code == 422 and "/v1/classify" in r.json()["error"]["message"]
        assert app.state.bertkit.registry.engines == {}
        put(store, "late/1", classifiers["1"])  # added after the start: found by the request naming it
        assert classify(c, "late").status_code == 200


# --- hot swaps ----------------------------------------------------------------------------------


def test_hot_swap_under_load_every_request_succeeds_on_the_version_that_served_it(tmp_path, classifiers, closed):
    store = tmp_path / "store"
    put(store, "tiny/1", classifiers["1"])
    app = store_app(store, api_key="s3cret")
    with TestClient(app) as c:
        assert classify(c, headers=KEY).json()["model_version"] == "1"
        old = app.state.bertkit.registry.engines["tiny"]
        # Hold version 1's batches until the swap is done, so requests are in flight on it while it happens.
        gate, entered, real_run = threading.Event(), threading.Event(), old.batcher.backend.run

        def held_run(batch):
            entered.set()
            gate.wait(10)
            return real_run(batch)

        old.batcher.backend.run = held_run

        answers, stop = [], threading.Event()

        def client_loop():
            while not stop.is_set():
                answers.append(classify(c, headers=KEY))

        def served_by(version: str) -> int:
            return sum(a.json().get("model_version") == version for a in list(answers))

        with ThreadPoolExecutor(10) as pool:
            try:
                loops = [pool.submit(client_loop) for _ in range(6)]  # soon all waiting on version 1
                # a batch held on version 1 (the 6 clients may all be in it, so none need be queued)
                wait_for(entered.is_set)
                put(store, "tiny/2", classifiers["2"])
                r = c.post("/v1/models/tiny/reload", headers=KEY)
                assert r.status_code == 200, r.text
                assert r.json() == {"model": "tiny", "version": "2", "previous_version": "1", "changed": True}
                # New clients get version 2 while version 1's requests are still in flight, and it stays open.
                loops += [pool.submit(client_loop) for _ in range(4)]
                wait_for(lambda: served_by("2") >= 20)
                assert served_by("1") == 0 and old not in closed
                gate.set()
                wait_for(lambda: served_by("1") >= 3)  # at least the two running batches and one queued
            finally:
                gate.set()
                stop.set()
            for loop in loops:
                loop.result()

        assert answers and all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
        for a in answers:
            body = a.json()
            assert {label["label"] for label in body["results"][0]} == LABELS[body["model_version"]]
        assert {a.json()["model_version"] for a in answers} == {"1", "2"}
        wait_for(lambda: old in closed)  # closed once its last request was done
        assert app.state.bertkit.registry.engines["tiny"] is not old
        assert models(c, headers=KEY)["tiny"]["versions"] == ["2", "1"]
        again = c.post("/v1/models/tiny/reload", headers=KEY).json()
        assert again == {"model": "tiny", "version": "2", "previous_version": "2", "changed": False}


def tamper(bundle: Path) -> None:
    onnx = bundle / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF  # same size, another sha256
    onnx.write_bytes(bytes(data))


def test_a_corrupt_version_is_refused_by_name_and_the_old_one_keeps_serving(tmp_path, classifiers, log_lines, closed):
    store = tmp_path / "store"
    put(store, "tiny/1", classifiers["1"])
    app = store_app(store, api_key="s3cret")
    with TestClient(app) as c:
        assert classify(c, headers=KEY).json()["model_version"] == "1"
        tamper(put(store, "tiny/2", classifiers["2"]))

        r = c.post("/v1/models/tiny/reload", headers=KEY)
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["type"] == "version_refused"
        assert "tiny version 2 refused" in error["message"] and "model.onnx" in error["message"]
        assert "tiny version 1 keeps serving" in error["message"]
        assert any("tiny version 2 refused" in line and "model.onnx" in line for line in log_lines)

        r = classify(c, headers=KEY)
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        listed = models(c, headers=KEY)["tiny"]
        assert (listed["version"], listed["versions"]) == ("1", ["2", "1"])
        assert [v["version"] for v in listed["refused"]] == ["2"] and "model.onnx" in listed["refused"][0]["reason"]
        assert closed == []  # nothing was swapped out


def test_the_poll_refuses_a_corrupt_version_once_and_swaps_in_its_repair(tmp_path, classifiers, log_lines):
    store = tmp_path / "store"
    put(store, "tiny/1", classifiers["1"])
    app = store_app(store, model_store_poll_s=0.05)
    with TestClient(app) as c:
        assert classify(c).json()["model_version"] == "1"
        broken = put(store, "tiny/2", classifiers["2"])
        tamper(broken)
        wait_for(lambda: any("tiny version 2 refused" in line for line in log_lines))
        time.sleep(0.3)  # several polls: the refused version is not tried again while its files are the same
        assert sum("tiny version 2 refused" in line for line in log_lines) == 1
        assert classify(c).json()["model_version"] == "1"

        shutil.copy2(classifiers["2"] / "model.onnx", broken / "model.onnx")  # repaired in place
        wait_for(lambda: classify(c).json()["model_version"] == "2")

        shutil.rmtree(broken)  # version 2 withdrawn: the poll goes back to version 1
        wait_for(lambda: classify(c).json()["model_version"] == "1")


def test_a_model_whose_versions_all_fail_answers_503_naming_them(tmp_path, classifiers):
    store = tmp_path / "store"
    tamper(put(store, "tiny/1", classifiers["1"]))
    with TestClient(store_app(store)) as c:
        r = classify(c)
        assert r.status_code == 503 and r.json()["error"]["type"] == "model_unavailable"
        assert "tiny version 1" in r.json()["error"]["message"]


# --- the reload endpoint ---------------------------------------------------------------------


def test_reload_requires_the_api_key_and_a_store_model(tmp_path, classifiers, log_lines):
    store = tmp_path / "store"
    put(store, "other/1", classifiers["1"])
    put(store, "tiny/1", classifiers["1"])  # the --bundles bundle below is named tiny too: it wins
    settings = ServiceSettings(
        _env_file=None, model_store=store, bundles=[classifiers["2"]], api_key="s3cret", warmup=False
    )
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/models/other/reload").status_code == 401
        assert c.post("/v1/models/other/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = c.post("/v1/models/other/reload", headers=KEY)  # not loaded yet: the reload loads it
        assert r.status_code == 200, r.text
        assert r.json() == {"model": "other", "version": "1", "previous_version": None, "changed": True}
        assert c.post("/v1/models/nope/reload", headers=KEY).status_code == 404
        assert c.post("/v1/models/-x/reload", headers=KEY).status_code == 422
        pinned = c.post("/v1/models/tiny/reload", headers=KEY)
        assert pinned.status_code == 422 and "--bundles" in pinned.json()["error"]["message"]
        listed = c.get("/v1/models", headers=KEY).json()["models"]
        assert [(m["name"], m["version"], m["loaded"]) for m in listed] == [("tiny", None, True), ("other", "1", True)]
        assert any("tiny skipped" in line for line in log_lines)


def test_an_unversioned_model_replaced_in_place_reloads(tmp_path, classifiers):
    store = tmp_path / "store"
    plain = put(store, "plain", classifiers["1"])
    with TestClient(store_app(store)) as c:
        r = classify(c, "plain")
        assert r.json()["model_version"] is None and {x["label"] for x in r.json()["results"][0]} == LABELS["1"]
        for name in ("model.onnx", "tokenizer.json", "bundle.json"):
            shutil.copy2(classifiers["2"] / name, plain / name)
        r = c.post("/v1/models/plain/reload")
        assert r.json() == {"model": "plain", "version": None, "previous_version": None, "changed": True}
        assert {x["label"] for x in classify(c, "plain").json()["results"][0]} == LABELS["2"]
