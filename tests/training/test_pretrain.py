"""End-to-end tests of `bert pretrain` on generated text with a tiny model (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_testkit import MAX_PREDICTIONS, build_data, one_thread, read_metrics, write_config  # noqa: F401

from tests.helpers.tolerances import network_tolerance, sum_tolerance
from training import checkpointing
from training.pretrain import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return build_data(tmp_path_factory.mktemp("pretrain-data"))


def vocab_size(data_dir: Path) -> int:
    return json.loads((data_dir / "manifest.json").read_text())["vocab_size"]


def args(data_dir: Path, out: Path, config: Path, **overrides) -> list[str]:
    settings = {"max_steps": 8, "batch_size": 8, "lr": 3e-3, "log_every": 1, "save_every": 100, "eval_every": 100}
    settings.update(overrides)
    argv = ["--data", str(data_dir), "--out", str(out), "--model-config", str(config), "--no-progress"]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir)}


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_loss_goes_down_and_eval_is_logged(data, tmp_path):
    train_dir, heldout_dir = data
    config = write_config(tmp_path / "config.json", vocab_size(train_dir), hidden=64)
    out = tmp_path / "run"
    argv = args(train_dir, out, config, max_steps=100, batch_size=16, lr=5e-3, warmup=10, eval_every=20)
    assert main(argv + ["--eval-data", str(heldout_dir)]) == 0
    train = read_metrics(out)
    first, last = (sum(r["loss"] for r in part) / len(part) for part in (train[:5], train[-5:]))
    assert last < first - 1.0, (first, last)
    evals = read_metrics(out, "eval")
    assert [r["step"] for r in evals] == [20, 40, 60, 80, 100]
    assert evals[-1]["perplexity"] < 0.9 * evals[0]["perplexity"]
    assert {"tokens_per_s", "lr", "nsp_acc", "mlm_acc"} <= set(train[-1])
    run = json.loads((out / "run.json").read_text())
    assert run["device"]["kind"] == "cpu" and run["precision"] in ("fp32", "bf16") and run["world_size"] == 1
    # The final model loads in the Hugging Face layout, with its tokenizer beside it.
    from model import load_pretrained

    model = load_pretrained(out / "model", head="pretraining")
    assert model.mlm.decoder_weight is model.bert.embeddings.word_embeddings.weight
    assert (out / "model" / "vocab.txt").exists()


def test_grad_accumulation_equals_one_big_batch(data, tmp_path):
    train_dir, _ = data
    config = write_config(tmp_path / "config.json", vocab_size(train_dir), dropout=0.0)
    # fp32 everywhere: --precision auto would train in bf16 on CPUs with native bf16 and in fp32 elsewhere
    common = dict(max_steps=5, precision="fp32")
    assert main(args(train_dir, tmp_path / "big", config, batch_size=16, **common)) == 0
    assert main(args(train_dir, tmp_path / "accum", config, batch_size=4, grad_accum=4, **common)) == 0
    big, accum = losses(tmp_path / "big"), losses(tmp_path / "accum")
    assert big.keys() == accum.keys() == set(range(1, 6))
    for step in big:
        # the step's mean loss over at most 16 x MAX_PREDICTIONS masked tokens, summed in another order
        assert accum[step] == pytest.approx(big[step], abs=sum_tolerance(16 * MAX_PREDICTIONS, big[step]))
    assert big[5] != big[1]  # the steps really trained


def test_accumulated_gradient_is_the_big_batch_gradient(data, tmp_path):
    """The loss curves above cannot see a constant factor on the gradient (AdamW and clipping undo it): this can."""
    from model import BertConfig, build_model
    from training.device import grad_scaler
    from training.pretrain_batches import to_tensors
    from training.pretrain_step import optimizer_step
    from training.pretraining_data import open_pretraining_data

    train_dir, _ = data
    dataset = open_pretraining_data(train_dir)
    config = BertConfig.from_json_file(write_config(tmp_path / "config.json", vocab_size(train_dir), dropout=0.0))

    class KeepGradient:  # stands in for the optimizer: records the gradient it is asked to apply
        def __init__(self, model):
            self.model = model

        def step(self):
            self.gradient = torch.cat([p.grad.flatten() for p in self.model.parameters() if p.grad is not None])

        def zero_grad(self, set_to_none=True):
            self.model.zero_grad(set_to_none=set_to_none)

    class NoSchedule:
        def step(self):
            pass

    def gradient(micro_batches: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = build_model(config, "pretraining")
        parts = np.array_split(np.arange(16), micro_batches)
        micro = [to_tensors(dataset.get_batch(part, 0), pin=False) for part in parts]
        keep = KeepGradient(model)
        optimizer_step(model, model, micro, keep, NoSchedule(), grad_scaler("cpu", "fp32"), 0.0, 1, "cpu", "fp32")
        return keep.gradient

    big, accum = gradient(1), gradient(4)
    # relative: a forward and a backward pass through every layer, rounded in other orders
    tolerance = network_tolerance(2 * config.num_hidden_layers, config.intermediate_size, 1.0)
    assert (accum - big).norm() <= tolerance * big.norm()


def test_exact_resume_after_sigkill(data, tmp_path):
    train_dir, _ = data
    config = write_config(tmp_path / "config.json", vocab_size(train_dir), dropout=0.1)  # dropout: RNG must resume too
    n = 4
    straight = tmp_path / "straight"
    assert main(args(train_dir, straight, config, max_steps=2 * n, save_every=n)) == 0

    # Same run in a child process, SIGKILLed two steps after its step-N checkpoint: no clean shutdown.
    killed = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import training.pretrain as p
        import training.pretrain_run as run
        original = run.MetricsLog.write
        def write(self, record):
            original(self, record)
            if record["step"] >= {n + 2}:
                os.kill(os.getpid(), signal.SIGKILL)
        run.MetricsLog.write = write
        sys.exit(p.main(sys.argv[1:]))
        """
    )
    argv = args(train_dir, killed, config, max_steps=2 * n, save_every=n)
    proc = subprocess.run([sys.executable, "-c", script, *argv], env=child_env(), capture_output=True, timeout=600)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert checkpointing.latest_checkpoint(killed / "checkpoints").name == checkpointing.step_dir_name(n)
    assert max(losses(killed)) == n + 2

    assert main(argv + ["--resume"]) == 0
    resumed, reference = losses(killed), losses(straight)
    assert sorted(resumed) == list(range(1, 2 * n + 1))  # records the killed run wrote past step N were dropped
    for step in range(n + 1, 2 * n + 1):
        assert resumed[step] == reference[step], step
    run = json.loads((killed / "run.json").read_text())
    assert run["starts"][-1]["resumed_from"].endswith(checkpointing.step_dir_name(n))


def test_ddp_two_gloo_processes_match_one_process(data, tmp_path):
    train_dir, _ = data
    config = write_config(tmp_path / "config.json", vocab_size(train_dir), dropout=0.0)
    assert main(args(train_dir, tmp_path / "single", config, max_steps=4, batch_size=8, precision="fp32")) == 0
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "training.pretrain",
    ]
    cmd += args(train_dir, tmp_path / "ddp", config, max_steps=4, batch_size=4, precision="fp32") + ["--device", "cpu"]
    proc = subprocess.run(cmd, env=child_env(), cwd=REPO, capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    single, ddp = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert single.keys() == ddp.keys() == set(range(1, 5))
    for step in single:
        # the step's mean loss over at most 8 x MAX_PREDICTIONS masked tokens, summed in another order
        assert ddp[step] == pytest.approx(single[step], abs=sum_tolerance(8 * MAX_PREDICTIONS, single[step]))
    run = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert run["world_size"] == 2 and run["starts"][-1]["backend"] == "gloo"


def test_sigterm_saves_a_checkpoint_and_exits(data, tmp_path, monkeypatch, capsys):
    import signal

    import training.pretrain_run as run

    train_dir, _ = data
    config = write_config(tmp_path / "config.json", vocab_size(train_dir))
    original = run.MetricsLog.write

    def write(self, record):
        original(self, record)
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(run.MetricsLog, "write", write)
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: other tests' servers install handlers
    assert main(args(train_dir, out, config, max_steps=1000)) == 130
    assert checkpointing.latest_checkpoint(out / "checkpoints").name == checkpointing.step_dir_name(3)
    assert "--resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_continued_pretraining_from_minilm_creates_tied_heads(minilm_dir, tmp_path):
    from training.pretraining_build import build_pretraining_data

    text = tmp_path / "text.txt"
    text.write_text("Paris is in France.\nIt is a large city.\n\nThe cat sat.\nIt slept.\n\n" * 4, encoding="utf-8")
    data_dir = tmp_path / "data"
    build_pretraining_data([text], minilm_dir, data_dir, max_seq_len=32, dupe_factor=1, progress=False, log=print)
    out = tmp_path / "run"
    argv = ["--init", str(minilm_dir), "--data", str(data_dir), "--out", str(out), "--max-steps", "1"]
    assert main(argv + ["--batch-size", "2", "--no-progress"]) == 0
    from model import load_pretrained

    model = load_pretrained(out / "model", head="pretraining")
    assert model.mlm.decoder_weight is model.bert.embeddings.word_embeddings.weight
    assert read_metrics(out)[0]["loss"] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "cuda"], "CUDA"),
        (["--precision", "fp16", "--device", "cpu"], "fp16"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "100000"], "fewer than one global batch"),
    ],
)
def test_user_errors_are_one_line(data, tmp_path, capsys, extra, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train_dir, _ = data
    config = write_config(tmp_path / "config.json", vocab_size(train_dir))
    assert main(args(train_dir, tmp_path / "run", config) + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bert pretrain: error:") and message in err[-1]


def test_missing_data_and_existing_run_are_user_errors(data, tmp_path, capsys):
    train_dir, _ = data
    config = write_config(tmp_path / "config.json", vocab_size(train_dir))
    assert main(args(tmp_path / "nope", tmp_path / "run", config)) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(args(train_dir, tmp_path / "run", config, max_steps=1)) == 0
    assert main(args(train_dir, tmp_path / "run", config, max_steps=1)) == 2
    assert "--resume" in capsys.readouterr().err
