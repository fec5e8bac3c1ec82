"""Execution-provider choice, variant choice, CPU fallback, padding and IO binding (no GPU needed)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from service.backends import (
    CPU,
    CUDA,
    ModelInput,
    OnnxBackend,
    choose_device,
    open_model,
    resolve_variant,
    warmup_batches,
)


def _variants(tmp_path, precisions=("fp32", "int8", "fp16")):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for p in precisions:
        (tmp_path / p).mkdir()
        (tmp_path / p / "bundle.json").write_text(json.dumps({"precision": p}))
    return tmp_path


class Capture(logging.Handler):
    """Collects records of `service.backends` (the service logger does not propagate to the root)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def logs():
    logger = logging.getLogger("service.backends")
    handler = Capture()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


class FakeLoader:
    """Stands in for core.bundle.load_bundle; `cuda` decides what a CUDA session does."""

    def __init__(self, cuda: str = "works"):
        self.cuda = cuda
        self.calls = []

    def __call__(self, path, providers=None, intra_op_threads=None):
        self.calls.append((path, providers))
        if CUDA in providers:
            if self.cuda == "raises":
                raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected\nmore detail")
            actual = [CUDA, CPU] if self.cuda == "works" else [CPU]  # "silent": onnxruntime dropped CUDA
        else:
            actual = [CPU]
        precision = json.loads((path / "bundle.json").read_text())["precision"]
        return SimpleNamespace(providers=actual, precision=precision, path=path)


def test_choose_device():
    assert choose_device("auto", [CUDA, CPU]) == ("cuda", None)
    assert choose_device("cpu", [CUDA, CPU]) == ("cpu", None)
    device, reason = choose_device("auto", [CPU])
    assert device == "cpu" and "onnxruntime-gpu" in reason
    assert choose_device("cuda", [CPU])[0] == "cpu"
    with pytest.raises(ValueError):
        choose_device("tpu", [CPU])


def test_resolve_variant_prefers_fp16_on_cuda_and_int8_on_cpu(tmp_path):
    root = _variants(tmp_path)
    assert resolve_variant(root, "cuda").name == "fp16"
    assert resolve_variant(root, "cpu").name == "int8"
    assert resolve_variant(root, "cpu", "fp32").name == "fp32"
    assert resolve_variant(root / "fp32", "cuda").name == "fp32"  # a bundle itself is used as it is
    only_fp32 = _variants(tmp_path / "x", ("fp32",))
    assert resolve_variant(only_fp32, "cuda").name == "fp32"
    with pytest.raises(FileNotFoundError, match="fp16"):
        resolve_variant(only_fp32, "cpu", "fp16")
    with pytest.raises(FileNotFoundError):
        resolve_variant(tmp_path / "missing", "cpu")


def test_cuda_is_used_with_the_fp16_variant_when_present(tmp_path):
    loader = FakeLoader("works")
    opened = open_model(_variants(tmp_path), "auto", loader=loader, available=[CUDA, CPU])
    assert opened.device == "cuda" and opened.bundle.precision == "fp16" and opened.fallback_reason is None
    assert loader.calls[0][1] == [CUDA, CPU]


@pytest.mark.parametrize("failure", ["raises", "silent"])
def test_cuda_failure_falls_back_to_cpu_int8_with_one_log_line(tmp_path, logs, failure):
    loader = FakeLoader(failure)
    opened = open_model(_variants(tmp_path), "auto", loader=loader, available=[CUDA, CPU])
    assert opened.device == "cpu" and opened.bundle.precision == "int8"
    assert loader.calls[-1][1] == [CPU]
    warnings = [r for r in logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "falling back to CPU" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_no_cuda_provider_means_cpu_without_trying(tmp_path, logs):
    loader = FakeLoader("works")
    opened = open_model(_variants(tmp_path), "auto", loader=loader, available=[CPU])
    assert opened.device == "cpu" and len(loader.calls) == 1 and "onnxruntime-gpu" in opened.fallback_reason
    open_model(_variants(tmp_path / "y"), "cuda", loader=loader, available=[CPU])
    assert any("provider=cuda requested" in r.getMessage() for r in logs.records)


def _fake_bundle(task="token-classification", session=None):
    calls = []

    def run(feeds):
        calls.append(feeds)
        b, t = feeds["input_ids"].shape
        if task == "token-classification":
            return {"logits": np.arange(b * t * 2, dtype=np.float16).reshape(b, t, 2)}
        return {"logits": np.ones((b, 3), dtype=np.float32)}

    tokenizer = SimpleNamespace(pad_id=0)
    return SimpleNamespace(task=task, tokenizer=tokenizer, run=run, session=session, calls=calls)


def test_backend_pads_and_cuts_rows_back():
    bundle = _fake_bundle()
    out = OnnxBackend(bundle).run([ModelInput([2, 5, 3]), ModelInput([2, 3], [0, 1])])
    feeds = bundle.calls[0]
    np.testing.assert_array_equal(feeds["input_ids"], [[2, 5, 3], [2, 3, 0]])
    np.testing.assert_array_equal(feeds["attention_mask"], [[1, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(feeds["token_type_ids"], [[0, 0, 0], [0, 1, 0]])
    assert out[0]["logits"].shape == (3, 2) and out[1]["logits"].shape == (2, 2)
    assert out[0]["logits"].dtype == np.float32  # fp16 outputs are widened
    seq = OnnxBackend(_fake_bundle("sequence-classification")).run([ModelInput([2, 3])])
    assert seq[0]["logits"].shape == (3,)


def test_cuda_backend_uses_io_binding():
    class Binding:
        def __init__(self):
            self.inputs, self.outputs = {}, []

        def bind_cpu_input(self, name, array):
            self.inputs[name] = array

        def bind_output(self, name, device):
            self.outputs.append((name, device))

        def copy_outputs_to_cpu(self):
            b, t = self.inputs["input_ids"].shape
            return [np.zeros((b, t, 2), dtype=np.float16)]

    class Session:
        binding = Binding()

        def get_inputs(self):
            return [SimpleNamespace(name="input_ids"), SimpleNamespace(name="attention_mask")]

        def get_outputs(self):
            return [SimpleNamespace(name="logits")]

        def io_binding(self):
            return self.binding

        def run_with_iobinding(self, binding):
            self.ran = True

    session = Session()
    bundle = _fake_bundle(session=session)
    out = OnnxBackend(bundle, device="cuda").run([ModelInput([2, 7, 3])])
    assert session.ran and not bundle.calls  # the plain run path was not used
    assert set(session.binding.inputs) == {"input_ids", "attention_mask"}
    assert session.binding.outputs == [("logits", "cuda")]
    assert out[0]["logits"].shape == (3, 2) and out[0]["logits"].dtype == np.float32


def test_warmup_shapes():
    cpu = warmup_batches(64, 32, 4096, 2, 3, 1, "cpu")
    assert len(cpu) == 1
    cuda = warmup_batches(128, 64, 4096, 2, 3, 1, "cuda")
    shapes = {(len(b), len(b[0])) for b in cuda}
    assert (1, 32) in shapes and (32, 128) in shapes  # 64 x 128 is over the token budget: capped at 32
    assert all(len(b) * len(b[0]) <= 4096 for b in cuda)
