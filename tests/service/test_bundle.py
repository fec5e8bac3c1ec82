"""Loading bundles without torch: manifest validation, checksums naming the bad file, running the graph."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from core.bundle import BundleError, load_bundle, read_manifest
from tests.helpers.bundles import make_tiny_bundle


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles"), "token-classification", optimize=True)


@pytest.fixture
def bundle_dir(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "bundle")


def edit_manifest(bundle_dir, **changes):
    path = bundle_dir / "bundle.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_load_and_run(bundle_dir):
    bundle = load_bundle(bundle_dir, intra_op_threads=1)
    assert bundle.name == "tiny-token-classification" and bundle.task == "token-classification"
    assert bundle.labels[0] == "O" and bundle.precision == "fp32" and bundle.max_seq_len == 64
    assert bundle.providers == ["CPUExecutionProvider"]
    enc = bundle.tokenizer.encode("John Smith lives in Paris")
    out = bundle.run({"input_ids": np.array([enc.ids]), "attention_mask": np.array([enc.attention_mask])})
    assert list(out) == ["logits"] and out["logits"].shape == (1, len(enc.ids), len(bundle.labels))
    assert out["logits"].dtype == np.float32


def test_run_rejects_bad_feeds(bundle_dir):
    bundle = load_bundle(bundle_dir)
    with pytest.raises(ValueError, match="max_seq_len"):
        bundle.run({"input_ids": np.ones((1, 65), dtype=np.int64)})
    with pytest.raises(ValueError, match="attention_mask"):
        bundle.run({"input_ids": np.ones((1, 5)), "attention_mask": np.ones((1, 4))})
    with pytest.raises(ValueError, match="batch, sequence"):
        bundle.run({"input_ids": np.ones(5)})


def test_tampered_model_is_named(bundle_dir):
    model = bundle_dir / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.onnx has been modified"):
        load_bundle(bundle_dir)


def test_truncated_tokenizer_is_named(bundle_dir):
    tokenizer = bundle_dir / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"tokenizer\.json is truncated"):
        load_bundle(bundle_dir)


def test_missing_file_is_named(bundle_dir):
    (bundle_dir / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx is missing"):
        load_bundle(bundle_dir)


def test_unchecked_load_still_rejects_a_broken_graph(bundle_dir):
    (bundle_dir / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(BundleError, match=r"model\.onnx cannot be loaded by onnxruntime"):
        load_bundle(bundle_dir, verify_checksums=False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 2}, "format_version 2 is newer"),
        ({"format_version": "1"}, "'format_version' has the wrong type"),
        ({"task": "translation"}, "field 'task'"),
        ({"labels": []}, "field 'labels'"),
        ({"labels": ["O", "O"]}, "duplicate"),
        ({"precision": "int4"}, "field 'precision'"),
        ({"outputs": ["start_logits"]}, "field 'outputs'"),
        ({"name": "has space"}, "field 'name'"),
        ({"files": {"model.onnx": {"sha256": "x", "bytes": 1}}}, "does not list tokenizer.json"),
        ({"files": {"../x": {}, "model.onnx": {}, "tokenizer.json": {}}}, "bad file name"),
        ({"max_seq_len": 2}, "max_seq_len"),
    ],
)
def test_manifest_fields_are_validated(bundle_dir, changes, message):
    edit_manifest(bundle_dir, **changes)
    with pytest.raises(BundleError, match=message) as info:
        read_manifest(bundle_dir)
    assert "bundle.json" in str(info.value)


def test_missing_field_and_broken_json(bundle_dir):
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    del manifest["max_seq_len"]
    (bundle_dir / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="'max_seq_len' is missing"):
        load_bundle(bundle_dir)
    (bundle_dir / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_dir)
    (bundle_dir / "bundle.json").unlink()
    with pytest.raises(BundleError, match="bundle.json is missing"):
        load_bundle(bundle_dir)


def test_unknown_provider_is_refused(bundle_dir):
    with pytest.raises(ValueError, match="NoSuchExecutionProvider"):
        load_bundle(bundle_dir, providers=["NoSuchExecutionProvider"])


def test_loads_without_torch(bundle_dir):
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import numpy as np\n"
        "from core.bundle import load_bundle\n"
        f"b = load_bundle({str(bundle_dir)!r})\n"
        "print(b.run({'input_ids': np.array([[2, 10, 3]])})['logits'].shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 3, 7)"
