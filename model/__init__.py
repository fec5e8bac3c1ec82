"""The BERT encoder and task heads in PyTorch, weight-compatible with Hugging Face checkpoints."""

from model.config import PRESETS, BertConfig

__all__ = ["PRESETS", "BertConfig", "build_model", "load_pretrained", "save_pretrained"]


def __getattr__(name: str):
    # torch is imported lazily so `model.config` and `model.tokenizer` work without it.
    if name in ("load_pretrained", "save_pretrained", "CheckpointError"):
        from model import checkpoint

        return getattr(checkpoint, name)
    if name == "build_model":
        from model.heads import build_model

        return build_model
    raise AttributeError(f"module 'model' has no attribute {name!r}")
