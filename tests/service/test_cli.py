"""`bert serve` refuses bad input with one line and exit code 2."""

from __future__ import annotations

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
