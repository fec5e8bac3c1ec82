"""Prediction behind one small interface, so evaluation scores a torch model and an ONNX bundle alike.

A predictor maps model inputs (numpy int64 (B, T): input_ids, attention_mask, token_type_ids)
to numpy outputs named as in docs/bundle-format.md: `logits`, or `start_logits`/`end_logits`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from training.finetune.batching import model_inputs, sorted_batches


class Predictor(Protocol):
    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class TorchPredictor:
    def __init__(self, model, device="cpu", precision: str = "fp32"):
        self.model, self.device, self.precision = model, device, precision

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        feeds = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        autocast = (
            torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else nullcontext()
        )
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), autocast:
                out = self.model(**feeds)
        finally:
            self.model.train(was_training)
        names = ("start_logits", "end_logits") if hasattr(out, "start_logits") else ("logits",)
        return {name: getattr(out, name).float().cpu().numpy() for name in names}


class BundlePredictor:
    """An exported ONNX bundle (service.bundle.load_bundle); it feeds the graph the inputs it declares."""

    def __init__(self, bundle):
        self.bundle = bundle

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.bundle.run(inputs)


def _row(name: str, value: np.ndarray, j: int, length: int) -> np.ndarray:
    """Row j of a batch output, without the padding positions when the output is per token."""
    per_token = value.ndim == 3 or name != "logits"  # (B, T, L) token logits, (B, T) start/end logits
    return value[j, :length] if per_token else value[j]


def predict_features(
    predictor: Predictor, features: list[dict], pad_id: int, batch_size: int = 64, progress: bool = True
) -> list[dict[str, np.ndarray]]:
    """One output dict per feature, in the features' order, cut back to the feature's own length."""
    outputs: list[dict[str, np.ndarray] | None] = [None] * len(features)
    batches = sorted_batches([len(f["input_ids"]) for f in features], batch_size)
    for batch in tqdm(batches, desc="predict", unit="batch", leave=False, disable=not progress):
        rows = [features[i] for i in batch]
        result = predictor(model_inputs(rows, pad_id))
        for j, i in enumerate(batch):
            length = len(features[i]["input_ids"])
            outputs[i] = {name: _row(name, value, j, length) for name, value in result.items()}
    return outputs
