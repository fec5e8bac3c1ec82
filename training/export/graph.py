"""Load the PyTorch model for a task and trace it to an fp32 ONNX graph.

The exporter sees `ExportWrapper`: it calls the model by keyword (the legacy exporter fails on
forwards with extra optional arguments otherwise) and returns plain tensors in the order of
the bundle's `outputs`. Attention is switched to explicit math so onnxruntime can fuse it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from core.bundle import INPUT_NAMES, OUTPUT_NAMES
from model import load_pretrained
from training.export.source import ModelSource, SourceError

DEFAULT_OPSET = 17


class ExportWrapper(nn.Module):
    """(input_ids, attention_mask, token_type_ids) -> the task's output tensors."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if self.task in ("sequence-classification", "token-classification"):
            return out.logits
        if self.task == "question-answering":
            return out.start_logits, out.end_logits
        if self.task == "fill-mask":
            return out.mlm_logits  # (B, T, V)
        hidden = out.last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)


def load_model(source: ModelSource) -> nn.Module:
    """The eval-mode model with the head the task needs, attention in explicit ('eager') math."""
    num_labels = len(source.labels) if source.labels else None
    # fill-mask ignores the NSP head and embedding the pooler: a checkpoint may lack them.
    allow_new_heads = source.task in ("fill-mask", "embedding")
    if source.task == "fill-mask":
        _require_mlm_weights(source.directory)
    model = load_pretrained(source.directory, head=source.head, num_labels=num_labels, allow_new_heads=allow_new_heads)
    model.bert.set_attention_implementation("eager")
    model.eval()
    if source.labels is None and hasattr(model, "num_labels"):
        source.labels = [f"LABEL_{i}" for i in range(model.num_labels)]
    return model


def _require_mlm_weights(directory: Path) -> None:
    path = directory / "model.safetensors"
    if not path.exists():
        return  # pytorch_model.bin: load_pretrained reports what is missing
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        if not any(key.startswith("cls.predictions.") for key in f.keys()):
            raise SourceError(f"{path} has no MLM head (cls.predictions.*): it cannot be exported as fill-mask")


def example_inputs(vocab_size: int, batch: int = 2, seq: int = 8) -> tuple[torch.Tensor, ...]:
    """Tracing inputs; the second row is padded so the mask path is traced as data, not constant."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, vocab_size, (batch, seq), generator=generator)  # (B, T)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, seq // 2 :] = 0
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, seq // 2 :] = 1
    return input_ids, attention_mask, token_type_ids


def export_onnx(wrapper: ExportWrapper, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Trace `wrapper` with the legacy exporter; batch and sequence axes are dynamic."""
    outputs = OUTPUT_NAMES[wrapper.task]
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    for name in outputs:
        axes[name] = (
            {0: "batch"} if wrapper.task in ("sequence-classification", "embedding") else {0: "batch", 1: "sequence"}
        )
    vocab_size = wrapper.model.config.vocab_size
    wrapper.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about the length check and the legacy-exporter notice
        torch.onnx.export(
            wrapper,
            example_inputs(vocab_size),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    wrapper.eval()  # the exporter restores the wrapper's previous mode
