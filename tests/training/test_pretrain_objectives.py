"""`bert pretrain` on MLM-only and SOP data, and the heads `--init` creates for an encoder-only checkpoint (CPU)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretrain_testkit import generate_corpus, one_thread, read_metrics, train_tokenizer, write_config  # noqa: F401

from tests.helpers.tolerances import binomial_tolerance, sum_tolerance
from training.pretrain import main

REPO = Path(__file__).resolve().parents[2]
MAX_PREDICTIONS = 8


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(tokenizer dir, train texts, held-out texts): a task's texts, one per line."""
    root = tmp_path_factory.mktemp("objective-texts")
    tok = train_tokenizer(generate_corpus(root / "all.txt", 70, 0), root / "tok")
    files = []
    for name, documents, seed in (("train", 60, 1), ("heldout", 10, 2)):
        corpus = generate_corpus(root / f"{name}.bert.txt", documents, seed).read_text(encoding="utf-8")
        lines = [" ".join(doc.split("\n")) for doc in corpus.strip().split("\n\n")]
        files.append(root / f"{name}.txt")
        files[-1].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tok, files[0], files[1]


def build(texts, objective: str, masking: str = "token") -> tuple[Path, Path]:
    from training.pretraining_build import build_pretraining_data

    tok, train, heldout = texts
    root = tok.parent / f"{objective}-{masking}"
    common = dict(max_seq_len=48, max_predictions=MAX_PREDICTIONS, progress=False, log=lambda _: None)
    common |= dict(input_format="lines", objective=objective, masking=masking, overwrite=True)
    build_pretraining_data([train], tok, root / "train", dynamic_masking=True, **common)
    build_pretraining_data([heldout], tok, root / "heldout", dupe_factor=1, **common)
    return root / "train", root / "heldout"


def args(data_dir: Path, out: Path, config: Path, **overrides) -> list[str]:
    settings = {"max_steps": 6, "batch_size": 8, "lr": 3e-3, "log_every": 1, "save_every": 100, "eval_every": 3}
    settings.update(overrides)
    argv = ["--data", str(data_dir), "--out", str(out), "--model-config", str(config), "--no-progress"]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def vocab_size(data_dir: Path) -> int:
    return json.loads((data_dir / "manifest.json").read_text())["vocab_size"]


def test_mlm_only_data_trains_without_pair_loss_and_saves_a_masked_lm(texts, tmp_path):
    from model import BertConfig, build_model, load_pretrained

    train_dir, heldout_dir = build(texts, "mlm", "whole-word")
    config_file = write_config(tmp_path / "config.json", vocab_size(train_dir))
    out = tmp_path / "run"
    assert main(args(train_dir, out, config_file) + ["--eval-data", str(heldout_dir)]) == 0
    for split in ("train", "eval"):
        records = read_metrics(out, split)
        assert records and not any(k.startswith(("nsp", "sop")) for r in records for k in r)
        assert all(r["loss"] == r["mlm_loss"] for r in records if "loss" in r)  # L = L_MLM
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["objective"] == "mlm" and run["data"]["masking"] == "whole-word"

    transformers = pytest.importorskip("transformers")
    masked_lm, info = transformers.BertForMaskedLM.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    transformers.BertForPreTraining.from_pretrained(out / "model")
    load_pretrained(out / "model", head="sequence-classification", num_labels=2, allow_new_heads=True)  # finetune

    # The pooler and NSP head were not trained: they are still the seed's initialisation.
    trained = load_pretrained(out / "model", head="pretraining")
    torch.manual_seed(0)  # --seed 0, as the run
    initial = build_model(BertConfig.from_json_file(config_file), "pretraining")
    for name in ("nsp.classifier.weight", "nsp.classifier.bias", "bert.pooler.dense.weight"):
        assert torch.equal(trained.state_dict()[name], initial.state_dict()[name]), name
    assert not torch.equal(trained.mlm.dense.weight, initial.mlm.dense.weight)  # the MLM head was


def test_sop_data_trains_the_pair_head_on_order_labels(texts, tmp_path):
    train_dir, heldout_dir = build(texts, "mlm+sop", "span")
    config_file = write_config(tmp_path / "config.json", vocab_size(train_dir))
    out = tmp_path / "run"
    assert main(args(train_dir, out, config_file) + ["--eval-data", str(heldout_dir)]) == 0
    train = read_metrics(out)
    assert {"sop_loss", "sop_acc", "mlm_loss", "mlm_acc"} <= set(train[-1])
    assert not any(k.startswith("nsp") for r in train for k in r)
    assert all(r["loss"] == r["mlm_loss"] + r["sop_loss"] for r in train)
    assert {"sop_acc", "mlm_acc"} <= set(read_metrics(out, "eval")[-1])
    from model import load_pretrained

    before = load_pretrained(out / "model", head="pretraining")
    assert before.nsp.classifier.weight.shape == (2, before.config.hidden_size)  # the same 2-class head


def test_eval_data_of_another_objective_is_a_one_line_error(texts, tmp_path, capsys):
    train_dir, _ = build(texts, "mlm")
    _, nsp_heldout = build(texts, "mlm+nsp")
    config_file = write_config(tmp_path / "config.json", vocab_size(train_dir))
    assert main(args(train_dir, tmp_path / "run", config_file) + ["--eval-data", str(nsp_heldout)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bert pretrain: error:") and "mlm+nsp objective" in err[-1]


def test_mlm_only_ddp_two_gloo_processes_match_one_process(texts, tmp_path):
    """The frozen pooler and NSP head stay out of DDP's gradient reduction."""
    train_dir, _ = build(texts, "mlm")
    config_file = write_config(tmp_path / "config.json", vocab_size(train_dir), dropout=0.0)
    common = dict(max_steps=3, precision="fp32", eval_every=100)
    assert main(args(train_dir, tmp_path / "single", config_file, batch_size=8, **common)) == 0
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "training.pretrain",
    ]
    cmd += args(train_dir, tmp_path / "ddp", config_file, batch_size=4, **common) + ["--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    single = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "single")}
    ddp = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "ddp")}
    assert single.keys() == ddp.keys() == {1, 2, 3}
    for step in single:
        # the step's mean loss over at most 8 x MAX_PREDICTIONS masked tokens, summed in another order
        assert ddp[step] == pytest.approx(single[step], abs=sum_tolerance(8 * MAX_PREDICTIONS, single[step]))


# --- heads created by --init ----------------------------------------------------------------------


@pytest.fixture
def encoder_only_dir(tmp_path) -> Path:
    """A saved bare encoder (Hugging Face BertModel layout, no cls.* tensors), initializer_range 0.05."""
    from model import BertConfig, build_model, save_pretrained

    config = BertConfig.preset("tiny", vocab_size=120, max_position_embeddings=64).replace(initializer_range=0.05)
    torch.manual_seed(3)
    return save_pretrained(build_model(config, None), tmp_path / "encoder")


def fraction_within_one_std(weight: torch.Tensor, std: float) -> tuple[float, int]:
    return (weight.abs() < std).float().mean().item(), weight.numel()


@pytest.mark.parametrize("source", ["encoder-only", "all-MiniLM-L6-v2"])
def test_init_from_an_encoder_only_checkpoint_creates_the_documented_heads(source, encoder_only_dir, request):
    from model import load_pretrained
    from model.checkpoint import _read_weights
    from training.pretrain_run import build_pretraining_model
    from training.pretrain_settings import PretrainSettings

    directory = encoder_only_dir if source == "encoder-only" else request.getfixturevalue("minilm_dir")
    checkpoint = _read_weights(directory)
    assert not any(k.startswith("cls.") for k in checkpoint)  # no MLM or NSP head in it
    settings = PretrainSettings(data="unused", out="unused", init=str(directory), seed=5)
    encoder = load_pretrained(directory)
    vocab = encoder.config.vocab_size
    model = build_pretraining_model(settings, vocab, 32)
    std = model.config.initializer_range

    # the encoder is the checkpoint's
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, encoder.bert.embeddings.word_embeddings.weight)
    assert torch.equal(model.bert.layers[-1].output_norm.weight, encoder.bert.layers[-1].output_norm.weight)
    # MLM decoder: the word-embedding matrix itself (same storage), bias 0
    assert model.mlm.decoder_weight is model.bert.embeddings.word_embeddings.weight
    assert model.mlm.decoder_weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert not model.mlm.bias.any()
    # MLM transform: dense ~ N(0, initializer_range) with bias 0, LayerNorm weight 1 and bias 0
    assert not model.mlm.dense.bias.any() and not model.mlm.norm.bias.any()
    assert (model.mlm.norm.weight == 1).all()
    # NSP classifier ~ N(0, initializer_range), bias 0
    assert not model.nsp.classifier.bias.any()
    one_std = math.erf(1 / math.sqrt(2))  # P(|x| < std) of a normal distribution
    for weight in (model.mlm.dense.weight, model.nsp.classifier.weight):
        fraction, n = fraction_within_one_std(weight.detach(), std)
        # each weight falls within one std independently: a binomial count
        assert fraction == pytest.approx(one_std, abs=binomial_tolerance(one_std, n))
        positive = (weight > 0).float().mean().item()
        assert positive == pytest.approx(0.5, abs=binomial_tolerance(0.5, n))  # centred on 0
    # the same --seed gives the same heads
    again = build_pretraining_model(settings, vocab, 32)
    assert torch.equal(again.mlm.dense.weight, model.mlm.dense.weight)
    assert torch.equal(again.nsp.classifier.weight, model.nsp.classifier.weight)


def test_task_adaptive_pretraining_of_minilm_with_mlm_and_whole_words(minilm_dir, tmp_path):
    """docs/pretraining.md's TAPT recipe in miniature: one text per line, MLM only, --init, then a task head."""
    from model import load_pretrained
    from training.finetune.model_dir import resolve_model_dir
    from training.pretraining_build import build_pretraining_data

    texts = tmp_path / "texts.txt"
    texts.write_text("A gripping, funny film.\nDull. Far too long.\nThe cast is wonderful.\n" * 6, encoding="utf-8")
    data_dir = tmp_path / "data"
    common = dict(input_format="lines", objective="mlm", masking="whole-word", dynamic_masking=True)
    build_pretraining_data([texts], minilm_dir, data_dir, max_seq_len=32, progress=False, log=print, **common)
    out = tmp_path / "tapt"
    argv = ["--init", str(minilm_dir), "--data", str(data_dir), "--out", str(out), "--max-steps", "2"]
    assert main(argv + ["--batch-size", "2", "--lr", "5e-5", "--no-progress"]) == 0
    assert "nsp_loss" not in read_metrics(out)[0] and read_metrics(out)[0]["mlm_loss"] > 0
    model = load_pretrained(resolve_model_dir(out), head="sequence-classification", num_labels=2, allow_new_heads=True)
    encoder = load_pretrained(minilm_dir)
    assert not torch.equal(model.bert.layers[0].attention.query.weight, encoder.bert.layers[0].attention.query.weight)
