"""`bert serve` refuses bad input with one line and exit code 2."""

from __future__ import annotations

import pytest

from cli.main import main as bert


def test_missing_bundle_dir(tmp_path, capsys):
    assert bert(["serve", "--bundles", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err


def test_directory_without_bundles(tmp_path, capsys):
    assert bert(["serve", "--bundles", str(tmp_path)]) == 2
    assert "not a bundle" in capsys.readouterr().err


def test_broken_manifest(tmp_path, capsys):
    (tmp_path / "bundle.json").write_text("{not json")
    assert bert(["serve", "--bundles", str(tmp_path)]) == 2
    assert "bundle.json" in capsys.readouterr().err


def test_bad_port_and_workers(tiny_bundles, capsys):
    path = str(tiny_bundles["sequence-classification"])
    assert bert(["serve", "--bundles", path, "--port", "70000"]) == 2
    assert bert(["serve", "--bundles", path, "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_idle_connections_outlive_the_proxies_in_front(tiny_bundles, monkeypatch):
    # uvicorn's own 5 s keep-alive equals httpx's idle expiry and is shorter than nginx's or an ALB's 60 s:
    # a client reusing a connection as the server closes it gets a reset (issue 18's ReadErrors).
    import uvicorn

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: runs.append(options))
    monkeypatch.setenv("BERTKIT_BUNDLES", "")  # restored afterwards; bert serve sets it for its workers
    path = str(tiny_bundles["sequence-classification"])
    assert bert(["serve", "--bundles", path]) == 0
    monkeypatch.setenv("BERTKIT_KEEP_ALIVE_TIMEOUT_S", "120")
    assert bert(["serve", "--bundles", path]) == 0
    assert [run["timeout_keep_alive"] for run in runs] == [75, 120]


def test_serve_needs_bundles_or_a_model_store(capsys):
    assert bert(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--bundles" in err and "--model-store" in err


@pytest.mark.parametrize(
    "layout, expected",
    [
        (None, "does not exist"),
        ("file", "is not a directory"),
        ("bundle", "is a bundle, not a model store: serve it with --bundles"),
        ("empty", "holds no models"),
        ("broken", "no model can load; sst2 version 1: "),
    ],
)
def test_model_store_preflight_errors_are_one_line(tmp_path, capsys, layout, expected):
    store = tmp_path / "store"
    if layout == "file":
        store.write_text("")
    elif layout == "bundle":
        store.mkdir()
        (store / "bundle.json").write_text("{}")
    elif layout == "empty":
        (store / "sst2" / "1").mkdir(parents=True)  # a version with no bundle.json yet
    elif layout == "broken":
        (store / "sst2" / "1").mkdir(parents=True)
        (store / "sst2" / "1" / "bundle.json").write_text("{not json")
    assert bert(["serve", "--model-store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err, err
