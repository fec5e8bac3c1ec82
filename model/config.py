"""Model hyper-parameters: one frozen dataclass, named presets, Hugging Face `config.json` interop."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522  # rows of the word-embedding table (and of the MLM decoder)
    hidden_size: int = 768  # width of every token vector
    num_hidden_layers: int = 12  # transformer layers in the encoder
    num_attention_heads: int = 12  # heads per layer; hidden_size must divide evenly
    intermediate_size: int = 3072  # width of the feed-forward block (usually 4 * hidden)
    hidden_act: str = "gelu"  # feed-forward activation; "gelu" is the exact erf form
    hidden_dropout_prob: float = 0.1  # dropout after embeddings, attention output and FFN
    attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities
    max_position_embeddings: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # segment ids (0 = sentence A, 1 = sentence B)
    layer_norm_eps: float = 1e-12  # epsilon of every LayerNorm
    pad_token_id: int = 0  # id of [PAD]; its embedding row starts at zero
    initializer_range: float = 0.02  # std of the normal init for linear and embedding weights
    # Task-head metadata, carried so a saved fine-tuned model explains its own outputs.
    labels: tuple[str, ...] = ()  # class or tag names in output order (id2label)
    problem_type: str | None = None  # one of PROBLEM_TYPES for sequence classification
    classifier_dropout: float | None = None  # dropout before task heads; None = hidden_dropout_prob

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type {self.problem_type!r} is not one of {PROBLEM_TYPES}")
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **changes: Any) -> BertConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BertConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        return cls(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            **overrides,
        )

    # --- Hugging Face config.json interop -------------------------------------------------

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any]) -> BertConfig:
        if hf.get("model_type", "bert") != "bert":
            raise ValueError(f"config.json has model_type {hf.get('model_type')!r}; expected 'bert'")
        pos_type = hf.get("position_embedding_type", "absolute")
        if pos_type != "absolute":
            raise ValueError(f"position_embedding_type {pos_type!r} is not supported; only 'absolute'")
        known = {f.name for f in dataclasses.fields(cls)} - {"labels"}
        kwargs = {k: v for k, v in hf.items() if k in known}
        id2label = hf.get("id2label")
        if id2label:
            kwargs["labels"] = tuple(id2label[k] for k in sorted(id2label, key=int))
        return cls(**kwargs)

    def to_hf_dict(self, architecture: str = "BertModel") -> dict[str, Any]:
        out: dict[str, Any] = {"architectures": [architecture], "model_type": "bert"}
        for f in dataclasses.fields(self):
            if f.name in ("labels",):
                continue
            value = getattr(self, f.name)
            if value is None and f.name in ("problem_type", "classifier_dropout"):
                continue
            out[f.name] = value
        out["position_embedding_type"] = "absolute"
        if self.labels:
            out["id2label"] = {str(i): name for i, name in enumerate(self.labels)}
            out["label2id"] = {name: i for i, name in enumerate(self.labels)}
        return out

    @classmethod
    def from_json_file(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        try:
            hf = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read model config {path}: {err}") from err
        return cls.from_hf_dict(hf)


# name -> (layers, hidden size, attention heads); intermediate size is 4 * hidden.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}
