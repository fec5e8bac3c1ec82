"""Device and precision selection, including the CPU fallback when CUDA is absent or broken."""

import logging

import pytest
import torch

from training import device as dev


def test_cpu_when_asked():
    choice = dev.select_device("cpu")
    assert choice.device == torch.device("cpu") and choice.kind == "cpu"
    assert choice.to_json()["device"] == "cpu" and "requested" in choice.reason


def test_auto_falls_back_to_cpu_without_cuda_and_logs_it(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="bertkit.device"):
        choice = dev.select_device("auto")
    assert choice.kind == "cpu" and "falling back" in choice.reason
    assert "training on the CPU" in caplog.text


def test_auto_falls_back_when_cuda_fails_to_initialise(monkeypatch):
    def broken_init():
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "init", broken_init)
    choice = dev.select_device("auto")
    assert choice.kind == "cpu" and "insufficient" in choice.reason


def test_cuda_requested_but_unusable_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda"):
        dev.select_device("cuda")
    with pytest.raises(ValueError, match="--device must be one of"):
        dev.select_device("tpu")


@pytest.mark.parametrize("command", ["finetune", "evaluate"])
def test_finetune_and_evaluate_take_the_devices_pretrain_takes(command, capsys):
    from cli.main import main as bert

    argv = {"finetune": ["classify", "--model", "m", "--train", "t", "--out", "o"],
            "evaluate": ["classify", "--model", "m", "--data", "d"]}[command]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        bert([command, *argv, "--device", "gpu"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'gpu' (choose from " + ", ".join(map(repr, dev.DEVICES)) in capsys.readouterr().err


def test_precision_resolution(monkeypatch):
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert dev.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    assert dev.resolve_precision("auto", "cpu") == "bf16"
    assert dev.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        dev.resolve_precision("fp16", "cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.resolve_precision("auto", "cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.resolve_precision("auto", "cuda") == "bf16"


def test_bf16_autocast_on_cpu_and_fp32_is_a_no_op():
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    with dev.autocast("cpu", "bf16"):
        assert torch.nn.functional.linear(x, w).dtype == torch.bfloat16
    with dev.autocast("cpu", "fp32"):
        assert torch.nn.functional.linear(x, w).dtype == torch.float32
    assert not dev.grad_scaler("cpu", "bf16").is_enabled()
