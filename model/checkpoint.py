"""Load and save Hugging Face-layout BERT checkpoints (`config.json` + weights).

All renaming between our parameter names and Hugging Face's lives in `HF_NAMES`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from model.config import BertConfig
from model.heads import HEADS, build_model

# Our module path -> Hugging Face module path, applied to the name with `bert.` removed
# (encoder) or as is (heads). `{i}` is a layer index. The tied MLM decoder is not listed:
# it is the word-embedding matrix and Hugging Face re-ties it on load.
HF_NAMES: dict[str, str] = {
    "embeddings.word_embeddings": "embeddings.word_embeddings",
    "embeddings.position_embeddings": "embeddings.position_embeddings",
    "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
    "embeddings.norm": "embeddings.LayerNorm",
    "layers.{i}.attention.query": "encoder.layer.{i}.attention.self.query",
    "layers.{i}.attention.key": "encoder.layer.{i}.attention.self.key",
    "layers.{i}.attention.value": "encoder.layer.{i}.attention.self.value",
    "layers.{i}.attention.output": "encoder.layer.{i}.attention.output.dense",
    "layers.{i}.attention_norm": "encoder.layer.{i}.attention.output.LayerNorm",
    "layers.{i}.feed_forward.up": "encoder.layer.{i}.intermediate.dense",
    "layers.{i}.feed_forward.down": "encoder.layer.{i}.output.dense",
    "layers.{i}.output_norm": "encoder.layer.{i}.output.LayerNorm",
    "pooler.dense": "pooler.dense",
    # heads
    "mlm.dense": "cls.predictions.transform.dense",
    "mlm.norm": "cls.predictions.transform.LayerNorm",
    "mlm.bias": "cls.predictions.bias",
    "nsp.classifier": "cls.seq_relationship",
    "classifier": "classifier",
    "qa_outputs": "qa_outputs",
}
TIED_NAMES = ("mlm.decoder_weight",)
# Checkpoint tensors that carry no weights of their own (buffers, tied copies).
IGNORED_HF_KEYS = re.compile(
    r"(^|\.)embeddings\.(position_ids|token_type_ids)$|^cls\.predictions\.decoder\.(weight|bias)$"
)
# Tensors that belong to a head (or the pooler), created fresh when `allow_new_heads` is set.
HEAD_PREFIXES = ("mlm.", "nsp.", "classifier.", "qa_outputs.", "bert.pooler.")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint does not fit the model: the message names the tensors."""


def to_hf_name(our_name: str, hf_prefix: str) -> str:
    """'bert.layers.0.attention.query.weight' -> 'bert.encoder.layer.0.attention.self.query.weight'."""
    in_encoder = our_name.startswith("bert.")
    name = our_name.removeprefix("bert.")
    layer = re.match(r"layers\.(\d+)\.", name)
    template = re.sub(r"^layers\.\d+\.", "layers.{i}.", name)
    if template in HF_NAMES:
        hf = HF_NAMES[template]
    else:
        module, _, leaf = template.rpartition(".")
        if module not in HF_NAMES:
            raise KeyError(f"no Hugging Face name for parameter {our_name!r}; add it to HF_NAMES")
        hf = f"{HF_NAMES[module]}.{leaf}"
    if layer:
        hf = hf.replace("{i}", layer.group(1))
    return hf_prefix + hf if in_encoder else hf


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    for filename in WEIGHT_FILES:
        path = directory / filename
        if not path.exists():
            continue
        try:
            if filename.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # corrupt or truncated file
            raise CheckpointError(f"cannot read weights from {path}: {err}") from err
    raise CheckpointError(f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)}")


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
    out = {}
    for key, tensor in state.items():
        key = re.sub(r"\.gamma$", ".weight", key)
        key = re.sub(r"\.beta$", ".bias", key)
        out[key] = tensor
    return out


def _resolve_directory(path: str | Path) -> Path:
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    if not (directory / "config.json").exists():
        raise CheckpointError(f"{directory} is not a model directory: config.json is missing")
    return directory


def load_pretrained(
    path: str | Path,
    head: str | None = None,
    num_labels: int | None = None,
    allow_new_heads: bool = False,
    config_overrides: dict | None = None,
) -> nn.Module:
    """Load a Hugging Face (or our) BERT checkpoint directory into a model with `head`.

    head: None (bare encoder), "pretraining", "sequence-classification",
    "token-classification" or "question-answering". Tensors the checkpoint lacks for the
    head are created only when `allow_new_heads` is true; anything else that does not fit
    raises `CheckpointError` naming the tensors.
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {[h for h in HEADS if h]} or None")
    directory = _resolve_directory(path)
    config = BertConfig.from_json_file(directory / "config.json")
    if config_overrides:
        config = config.replace(**config_overrides)
    if num_labels is not None and config.labels and len(config.labels) != num_labels:
        config = config.replace(labels=())
    model = build_model(config, head, num_labels)
    state = _normalise_keys(_read_weights(directory))
    load_state(model, state, allow_new_heads=allow_new_heads, source=str(directory))
    return model


def load_state(model: nn.Module, state: dict[str, torch.Tensor], allow_new_heads: bool, source: str) -> None:
    """Copy a Hugging Face-named state dict into `model`, checking names and shapes."""
    has_prefix = any(k.startswith("bert.") for k in state)
    hf_prefix = "bert." if has_prefix else ""
    ours = {k: v for k, v in model.state_dict().items() if k not in TIED_NAMES}
    missing, mismatched, new_heads = [], [], []
    used: set[str] = set()
    loaded: dict[str, torch.Tensor] = {}
    for our_name, target in ours.items():
        hf_name = to_hf_name(our_name, hf_prefix)
        is_head = our_name.startswith(HEAD_PREFIXES)
        if hf_name not in state:
            (new_heads if is_head and allow_new_heads else missing).append(hf_name)
            continue
        used.add(hf_name)
        tensor = state[hf_name]
        if tuple(tensor.shape) != tuple(target.shape):
            if is_head and allow_new_heads:
                new_heads.append(hf_name)
                continue
            hint = ""
            if our_name.endswith("word_embeddings.weight"):
                hint = " (vocab_size in config.json does not match the embedding table)"
            mismatched.append(f"{hf_name}: checkpoint {tuple(tensor.shape)} vs model {tuple(target.shape)}{hint}")
            continue
        loaded[our_name] = tensor.to(target.dtype)
    unexpected = [
        k for k in state if k not in used and not IGNORED_HF_KEYS.search(k) and not _belongs_to_other_head(k, hf_prefix)
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if mismatched:
        problems.append(f"mis-shaped tensors: {'; '.join(mismatched)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    if problems:
        advice = ""
        if missing and all(_is_head_hf_name(m, hf_prefix) for m in missing):
            advice = " (pass allow_new_heads=True to create the missing head)"
        raise CheckpointError(f"checkpoint {source} does not fit the model: " + " | ".join(problems) + advice)
    model.load_state_dict(loaded, strict=False)


def _is_head_hf_name(hf_name: str, hf_prefix: str) -> bool:
    return _belongs_to_other_head(hf_name, hf_prefix)


def _belongs_to_other_head(hf_name: str, hf_prefix: str) -> bool:
    """Head tensors of another task (or a pooler our head does not use) are skipped, not errors."""
    if hf_name.startswith(("cls.", "classifier.", "qa_outputs.")):
        return True
    return hf_name.startswith(f"{hf_prefix}pooler.")


def save_pretrained(model: nn.Module, path: str | Path) -> Path:
    """Write `config.json` + `model.safetensors` in the Hugging Face layout."""
    from safetensors.torch import save_file

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config: BertConfig = model.config
    labels = config.labels
    num_labels = getattr(model, "num_labels", None)
    if num_labels and not labels:
        labels = tuple(f"LABEL_{i}" for i in range(num_labels))
        config = config.replace(labels=labels)
    hf_config = config.to_hf_dict(architecture=model.hf_architecture)
    tensors = {
        to_hf_name(name, model.hf_prefix): tensor.detach().contiguous().cpu()
        for name, tensor in model.state_dict().items()
        if name not in TIED_NAMES
    }
    tmp = directory / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    return directory
