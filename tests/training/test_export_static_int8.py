"""The default export (static int8): batch-invariant outputs, its calibration data, and the variants' flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.batches import ModelInput, pad_inputs
from core.bundle import OUTPUT_NAMES, load_bundle
from core.checksums import sha256_file
from tests.helpers.bundles import make_tiny_model
from tests.helpers.tolerances import sum_tolerance
from training.export import ExportError, export_bundle
from training.export.calibration import CalibrationError

SHORT, LONG = "paris is great", "the quick brown fox jumps over the lazy dog , and john smith said it was boring"
QUESTION = "who is the capital ?"
# Alone, an input is not padded; in a batch its padded positions join the sums over the sequence
# (attention, pooling) as exact zeros but may regroup them: at most (T-1)·eps of the values summed,
# with T < 32 tokens here and values below 2: 7e-6, inside the 1e-5 the service promises.
TOLERANCE = sum_tolerance(32, 2.0)
FINE_TUNED = ("sequence-classification", "token-classification", "question-answering")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {task: make_tiny_model(root / task, task) for task in (*FINE_TUNED, "fill-mask", "embedding")}


def rows(bundle, texts: list[str]) -> list[ModelInput]:
    pairs = [(QUESTION, t) for t in texts] if bundle.task == "question-answering" else texts
    return [ModelInput(e.ids, e.type_ids) for e in bundle.tokenizer.encode_batch(pairs, max_length=bundle.max_seq_len)]


@pytest.mark.parametrize("task", [*FINE_TUNED, "fill-mask"])
def test_default_bundle_answers_an_input_alone_as_inside_a_padded_batch(models, tmp_path, task):
    out = export_bundle(models[task], tmp_path / "b")
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["precision"] == "int8" and manifest["batch_invariant"] is True
    assert manifest["quantization"]["method"] == "static" and manifest["quantization"]["quantized_matmuls"] > 0
    assert manifest["parity"]["alone_vs_batch_max_abs_diff"] <= TOLERANCE
    bundle = load_bundle(out)
    short, long = rows(bundle, [SHORT, LONG])
    assert len(short) < len(long) < 32
    alone = bundle.run(pad_inputs([short], bundle.tokenizer.pad_id))
    batched = bundle.run(pad_inputs([long, short], bundle.tokenizer.pad_id))  # short padded to long's length
    for name in OUTPUT_NAMES[task]:
        mine = batched[name][1:2]
        if mine.shape != alone[name].shape:  # token-level outputs: the real tokens only
            mine = mine[:, : len(short)]
        assert np.abs(mine - alone[name]).max() <= TOLERANCE, name
        assert (mine.argmax(-1) == alone[name].argmax(-1)).all(), name  # same labels, spans, answers


def test_default_calibration_is_the_training_file_task_json_records(models, tmp_path):
    model_dir = models["sequence-classification"]
    train_file = json.loads((model_dir / "task.json").read_text())["train_file"]
    manifest = json.loads((export_bundle(model_dir, tmp_path / "b") / "bundle.json").read_text())
    calibration = manifest["quantization"]["calibration"]
    assert calibration["file"] == train_file and calibration["from"] == "task.json train_file"
    assert calibration["sha256"] == sha256_file(train_file)
    assert calibration["examples"] == calibration["inputs"] == 8 and calibration["seed"] == 0


def test_calibration_option_reads_another_file_in_the_fine_tuning_format(models, tmp_path):
    own = tmp_path / "calibration.tsv"
    own.write_text("sentence\tlabel\n" + "".join(f"a {w} movie\tpositive\n" for w in ("good", "bad", "long")))
    out = export_bundle(models["sequence-classification"], tmp_path / "b", calibration=own)
    calibration = json.loads((out / "bundle.json").read_text())["quantization"]["calibration"]
    assert calibration["file"] == str(own.resolve()) and calibration["from"] == "--calibration"
    assert calibration["sha256"] == sha256_file(own) and calibration["examples"] == 3
    # a bare encoder has no task.json: plain text lines calibrate its embedding bundle
    text = tmp_path / "sentences.txt"
    text.write_text("paris is the capital of france\nthe lazy dog\n")
    manifest = json.loads(
        (export_bundle(models["embedding"], tmp_path / "e", calibration=text) / "bundle.json").read_text()
    )
    assert manifest["batch_invariant"] is True and manifest["quantization"]["calibration"]["examples"] == 2


@pytest.mark.parametrize(
    ("precision", "invariant", "method"),
    [("int8-dynamic", False, "dynamic"), ("fp32", True, None), ("fp16", True, None)],
)
def test_each_variant_says_whether_it_is_batch_invariant(models, tmp_path, precision, invariant, method):
    out = export_bundle(models["sequence-classification"], tmp_path / "b", precision=precision, optimize=True)
    manifest = load_bundle(out, providers=["CPUExecutionProvider"]).manifest
    assert manifest.batch_invariant is invariant and manifest.raw["batch_invariant"] is invariant
    assert (manifest.raw["quantization"] or {}).get("method") == method


def test_missing_calibration_data_is_a_one_line_error(models, tmp_path, capsys):
    from training.export.cli import main

    with pytest.raises(CalibrationError, match="records no train_file: pass --calibration FILE"):
        export_bundle(models["embedding"], tmp_path / "b")
    with pytest.raises(CalibrationError, match="does not exist"):
        export_bundle(models["sequence-classification"], tmp_path / "b", calibration=tmp_path / "missing.tsv")
    with pytest.raises(ExportError, match="--calibration is for --precision int8"):
        export_bundle(models["sequence-classification"], tmp_path / "b", precision="fp32", calibration=tmp_path)
    assert main([str(models["embedding"]), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err  # the progress bar, then one line
    assert err.splitlines()[-1].startswith("bert export: error:") and "--calibration FILE" in err.splitlines()[-1]
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
