"""Export tiny random models of every task: bundle contents, parity with PyTorch, fusions, int8, fp16."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from core.batches import ModelInput, pad_inputs
from core.bundle import OUTPUT_NAMES, load_bundle
from model import load_pretrained
from tests.helpers.bundles import TINY_FP32_TOLERANCE, TINY_INTERMEDIATE, TINY_LAYERS, make_tiny_model
from tests.helpers.tolerances import FP16_EPS, network_tolerance
from training.export import ExportError, export_bundle
from training.export.graph import ExportWrapper, load_model
from training.export.source import SourceError, read_source

TASKS = ("sequence-classification", "token-classification", "question-answering", "fill-mask", "embedding")
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France", "café crème 中文"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {task: make_tiny_model(root / task, task) for task in TASKS}


def torch_outputs(model_dir, feeds) -> dict[str, np.ndarray]:
    """PyTorch reference computed independently of the exporter's own parity code."""
    source = read_source(model_dir)
    model = load_model(source)
    model.bert.set_attention_implementation("sdpa")
    wrapper = ExportWrapper(model, source.task).eval()
    with torch.no_grad():
        out = wrapper(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
    out = out if isinstance(out, tuple) else (out,)
    return {name: t.numpy() for name, t in zip(OUTPUT_NAMES[source.task], out)}


def text_feeds(bundle):
    texts = [("Who lives in Paris?", t) for t in TEXTS] if bundle.task == "question-answering" else TEXTS
    encodings = bundle.tokenizer.encode_batch(texts, max_length=bundle.max_seq_len)
    return pad_inputs([ModelInput(e.ids, e.type_ids) for e in encodings], bundle.tokenizer.pad_id)


@pytest.mark.parametrize("task", TASKS)
def test_fused_fp32_export_matches_pytorch(models, tmp_path, task):
    out = export_bundle(models[task], tmp_path / "b", precision="fp32", optimize=True, name=f"tiny-{task}")
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["format_version"] == 1 and manifest["task"] == task and manifest["precision"] == "fp32"
    assert sorted(manifest["files"]) == ["model.onnx", "tokenizer.json"]
    assert manifest["parity"]["max_abs_diff"] <= TINY_FP32_TOLERANCE  # fused ONNX kernels round differently
    # explicit attention math fuses fully: one EmbedLayerNormalization, one Attention per layer
    assert manifest["fusions"]["EmbedLayerNormalization"] == 1
    assert manifest["fusions"]["Attention"] == 2
    bundle = load_bundle(out)
    feeds = text_feeds(bundle)
    mask = feeds["attention_mask"] > 0
    got, want = bundle.run(feeds), torch_outputs(models[task], feeds)
    for name in OUTPUT_NAMES[task]:
        diff = np.abs(got[name] - want[name])
        diff = diff[mask] if diff.shape[:2] == mask.shape else diff
        assert diff.max() <= TINY_FP32_TOLERANCE, name


def test_plain_fp32_export_has_dynamic_axes(models, tmp_path):
    out = export_bundle(models["token-classification"], tmp_path / "b", precision="fp32")
    bundle = load_bundle(out)
    assert bundle.manifest.raw["optimized"] is False and bundle.manifest.raw["fusions"] is None
    for batch, seq in ((1, 5), (3, 40)):
        ids = np.random.default_rng(0).integers(5, 100, size=(batch, seq))
        logits = bundle.run({"input_ids": ids})["logits"]
        assert logits.shape == (batch, seq, len(bundle.labels))


@pytest.mark.parametrize("task", ["token-classification", "sequence-classification"])
def test_dynamic_int8_export_keeps_most_argmaxes(models, tmp_path, task):
    out = export_bundle(models[task], tmp_path / "b", precision="int8-dynamic", optimize=True)
    bundle = load_bundle(out)
    assert bundle.precision == "int8"
    graph_ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert graph_ops & {"DynamicQuantizeMatMul", "MatMulInteger", "QAttention", "DynamicQuantizeLinear"}
    feeds = text_feeds(bundle)
    got, want = bundle.run(feeds)["logits"], torch_outputs(models[task], feeds)["logits"]
    if task == "token-classification":
        real = feeds["attention_mask"] > 0
        agreement = (got.argmax(-1) == want.argmax(-1))[real].mean()
    else:
        agreement = (got.argmax(-1) == want.argmax(-1)).mean()
    assert agreement >= 0.8
    assert bundle.manifest.raw["parity"]["argmax_agreement"] >= 0.8
    assert bundle.manifest.raw["parity"]["fp32_graph_max_abs_diff"] <= TINY_FP32_TOLERANCE
    weights = onnx.load(str(out / "model.onnx")).graph.initializer
    assert any(w.data_type == onnx.TensorProto.INT8 for w in weights)


def test_fp16_export_runs_on_cpu(models, tmp_path):
    out = export_bundle(models["question-answering"], tmp_path / "b", precision="fp16", optimize=True)
    bundle = load_bundle(out, providers=["CPUExecutionProvider"])
    assert bundle.precision == "fp16"
    feeds = text_feeds(bundle)
    got, want = bundle.run(feeds), torch_outputs(models["question-answering"], feeds)
    real = feeds["attention_mask"] > 0
    for name in ("start_logits", "end_logits"):
        assert got[name].dtype == np.float32  # inputs and outputs stay fp32 for callers
        # fp16 activations: the tiny model's layers round at fp16's eps instead of fp32's
        tolerance = network_tolerance(TINY_LAYERS, TINY_INTERMEDIATE, np.abs(want[name])[real].max(), FP16_EPS)
        assert np.abs(got[name] - want[name])[real].max() <= tolerance


def test_task_inferred_from_architectures_without_task_json(models, tmp_path):
    model_dir = shutil.copytree(models["token-classification"], tmp_path / "hf")
    (model_dir / "task.json").unlink()
    (model_dir / "tokenizer.json").unlink()  # vocab.txt only: the bundle still gets a tokenizer.json
    out = export_bundle(model_dir, tmp_path / "b", precision="fp32", max_seq_len=48)
    bundle = load_bundle(out)
    assert bundle.task == "token-classification"
    assert bundle.labels == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]  # from id2label
    assert bundle.max_seq_len == 48
    assert (out / "tokenizer.json").exists()


def test_pretraining_checkpoint_exports_as_fill_mask(models, tmp_path):
    bundle = load_bundle(export_bundle(models["fill-mask"], tmp_path / "b"))
    assert bundle.task == "fill-mask" and bundle.labels is None
    enc = bundle.tokenizer.encode("the quick brown [MASK] jumps")
    logits = bundle.run({"input_ids": np.array([enc.ids])})["logits"]
    assert logits.shape == (1, len(enc.ids), bundle.tokenizer.vocab_size)


def test_minilm_exports_as_embedding_bundle(minilm_dir, tmp_path):
    out = export_bundle(minilm_dir, tmp_path / "minilm", precision="fp32", optimize=True)
    bundle = load_bundle(out)
    assert bundle.task == "embedding" and bundle.outputs == ["embeddings"]
    assert bundle.manifest.raw["fusions"]["Attention"] == 6
    # MiniLM: 6 layers, feed-forward 1,536; its mean-pooled embeddings stay below 1.1 in absolute value
    assert bundle.manifest.raw["parity"]["max_abs_diff"] <= network_tolerance(6, 1536, 1.1)
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    encodings = bundle.tokenizer.encode_batch(texts)
    emb = bundle.run(pad_inputs([ModelInput(e.ids, e.type_ids) for e in encodings], bundle.tokenizer.pad_id))[
        "embeddings"
    ]
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3  # a real sentence encoder, not noise


def test_eval_file_records_bundle_and_fp32_metric(models, tmp_path):
    rows = ["sentence\tlabel"] + [f"{t}\t{i % 2}" for i, t in enumerate(TEXTS * 4)]
    eval_file = tmp_path / "dev.tsv"
    eval_file.write_text("\n".join(rows) + "\n")
    model_dir = shutil.copytree(models["sequence-classification"], tmp_path / "m")
    info = json.loads((model_dir / "task.json").read_text())
    info["labels"] = ["0", "1"]
    (model_dir / "task.json").write_text(json.dumps(info))
    out = export_bundle(model_dir, tmp_path / "b", optimize=True, eval_file=eval_file)  # static int8
    metrics = json.loads((out / "bundle.json").read_text())["metrics"]
    assert metrics["examples"] == 12 and metrics["main_metric"] == "accuracy"
    for key in ("bundle", "fp32"):
        assert 0.0 <= metrics[key]["accuracy"] <= 1.0
    assert metrics["difference"] == pytest.approx(metrics["bundle"]["accuracy"] - metrics["fp32"]["accuracy"])


def test_eval_file_for_ner_uses_entity_f1(models, tmp_path):
    eval_file = tmp_path / "valid.txt"
    eval_file.write_text("John B-PER\nSmith I-PER\nlives O\nin O\nParis B-LOC\n\nthe O\nfox O\n\n")
    out = export_bundle(models["token-classification"], tmp_path / "b", precision="fp32", eval_file=eval_file)
    metrics = json.loads((out / "bundle.json").read_text())["metrics"]
    assert metrics["main_metric"] == "f1" and metrics["examples"] == 2
    assert metrics["bundle"]["f1"] == pytest.approx(metrics["fp32"]["f1"], abs=1e-9)  # fp32 graph: same decisions


def test_refuses_non_empty_output_and_bad_options(models, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_bundle(models["embedding"], tmp_path / "busy")
    with pytest.raises(ExportError, match="precision must be one of int8, int8-dynamic, fp32, fp16"):
        export_bundle(models["embedding"], tmp_path / "x", precision="int4")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_a_bundle(models, tmp_path):
    export_bundle(models["embedding"], tmp_path / "b", precision="fp32", name="first")
    with pytest.raises(ExportError, match="--overwrite"):
        export_bundle(models["embedding"], tmp_path / "b", precision="fp32")
    export_bundle(models["embedding"], tmp_path / "b", precision="fp32", overwrite=True, name="second")
    assert load_bundle(tmp_path / "b").name == "second"


def test_unsupported_architecture_and_missing_mlm_head(models, tmp_path):
    model_dir = shutil.copytree(models["embedding"], tmp_path / "m")
    config = json.loads((model_dir / "config.json").read_text())
    config["architectures"] = ["BertLMHeadModel"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(SourceError, match="architectures"):
        export_bundle(model_dir, tmp_path / "b")
    config["architectures"] = ["BertForMaskedLM"]  # but the weights are a bare encoder
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(SourceError, match="no MLM head"):
        export_bundle(model_dir, tmp_path / "b")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_cli_exports_and_reports_errors_in_one_line(models, tmp_path, capsys):
    from training.export.cli import main

    assert (
        main(
            [str(models["sequence-classification"]), "--out", str(tmp_path / "b"), "--precision", "fp32", "--optimize"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "parity vs PyTorch fp32" in out and "Attention 2" in out
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bert export: error:") and "nowhere" in err[-1]


def test_exported_labels_follow_the_checkpoint(models):
    model = load_pretrained(models["token-classification"], head="token-classification")
    assert list(model.config.labels) == read_source(models["token-classification"]).labels
