"""`bert verify`: a good bundle passes every check; a tampered one fails with one line naming the file."""

from __future__ import annotations

import json
import shutil

import pytest

from core.bundle import BundleError
from service.verify import main, verify_bundle
from tests.helpers.bundles import make_tiny_bundle

TASKS = ("sequence-classification", "token-classification", "question-answering", "fill-mask", "embedding")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    made = {task: make_tiny_bundle(root, task) for task in TASKS}
    made["int8"] = make_tiny_bundle(root, "sequence-classification", precision="int8-dynamic", optimize=True)
    return made


@pytest.fixture
def copy(bundles, tmp_path):
    return lambda key: shutil.copytree(bundles[key], tmp_path / key)


@pytest.mark.parametrize("key", [*TASKS, "int8"])
def test_good_bundles_pass(bundles, key, capsys):
    assert main([str(bundles[key])]) == 0
    out = capsys.readouterr().out
    assert "checksums: 2 files match" in out and "example:" in out and "bundle is valid" in out


def test_tampered_model_fails_naming_the_file(copy, capsys):
    bundle = copy("sequence-classification")
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-10] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    assert main([str(bundle)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.onnx" in err[0] and err[0].startswith("bert verify: error:")


def test_truncated_tokenizer_fails_naming_the_file(copy, capsys):
    bundle = copy("question-answering")
    path = bundle / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:-50])
    assert main([str(bundle)]) != 0
    err = capsys.readouterr().err.strip()
    assert "tokenizer.json is truncated" in err and "\n" not in err


def test_labels_not_matching_the_graph_fail(copy):
    bundle = copy("token-classification")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["labels"] = manifest["labels"][:3]
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="width 7, 3 labels"):
        verify_bundle(bundle)


def test_special_ids_not_matching_the_tokenizer_fail(copy):
    bundle = copy("fill-mask")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["tokenizer"]["mask_id"] = 0
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"tokenizer\.json: mask_id"):
        verify_bundle(bundle)


def test_not_a_bundle(tmp_path, capsys):
    assert main([str(tmp_path)]) != 0
    assert "bundle.json is missing" in capsys.readouterr().err
