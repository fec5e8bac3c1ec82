"""The PyTorch backend of core.batches, and prediction over task features with a progress bar.

A backend maps model inputs (numpy int64 (B, T): input_ids, attention_mask, token_type_ids) to
numpy outputs named as in docs/bundle-format.md: `logits`, or `start_logits`/`end_logits`. An
exported bundle (core.bundle.Bundle) is the other backend; both go through the same batching,
padding and row splitting (core.batches.predict_inputs), so evaluation scores a torch model and
an ONNX bundle alike, and as the service runs them.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
from tqdm.auto import tqdm

from core.batches import Backend, ModelInput, predict_inputs


class TorchBackend:
    def __init__(self, model, device="cpu", precision: str = "fp32"):
        self.model, self.device, self.precision = model, device, precision

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
        autocast = (
            torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else nullcontext()
        )
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), autocast:
                out = self.model(**tensors)
        finally:
            self.model.train(was_training)
        names = ("start_logits", "end_logits") if hasattr(out, "start_logits") else ("logits",)
        return {name: getattr(out, name).float().cpu().numpy() for name in names}


def predict_features(
    backend: Backend, features: list[dict], pad_id: int, token_level: bool, batch_size: int = 64, progress=True
) -> list[dict[str, np.ndarray]]:
    """One output dict per feature, in the features' order, token-level outputs cut to the feature's length."""
    inputs = [ModelInput(f["input_ids"], f["token_type_ids"]) for f in features]
    with tqdm(total=len(inputs), desc="predict", unit="seq", leave=False, disable=not progress) as bar:
        return predict_inputs(backend, inputs, pad_id, token_level, batch_size, progress=bar.update)
