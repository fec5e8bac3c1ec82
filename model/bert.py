"""The BERT encoder: embeddings, self-attention, feed-forward, post-LN layers, pooler.

Shapes: B = batch, T = sequence length, H = hidden size, nh = heads, hs = head size.
Module names are ours; `model/checkpoint.py` maps them one-to-one onto Hugging Face names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import BertConfig
from model.linear import Linear


def activation(name: str):
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name == "silu":
        return F.silu
    raise ValueError(f"unknown activation {name!r}")


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None  # (B, H) tanh(dense([CLS])), None without a pooler


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        # Expanded to (B, T) so onnxruntime's optimizer recognises the pattern and fuses
        # EmbedLayerNormalization; expand is a view, free in PyTorch.
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        positions = positions.unsqueeze(0).expand_as(input_ids)  # (B, T)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )  # (B, T, H)
        return self.dropout(self.norm(x))


class TokenLayout:
    """Where each row of the packed (N, H) activations sits in the padded (B, T) batch.

    Linear layers, LayerNorms and the feed-forward block run on real tokens only (N rows);
    attention needs the padded (B, T) layout and converts with `pad` / `unpad`. With no
    padding (or while exporting), `index` is None and both return their input as it is (B, T, C).
    """

    def __init__(self, batch: int, seq: int, index: torch.Tensor | None):
        self.batch, self.seq, self.index = batch, seq, index

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            return rows  # (B, T, C): nothing was packed
        full = rows.new_zeros(self.batch * self.seq, rows.shape[-1])
        return full.index_copy_(0, self.index, rows).view(self.batch, self.seq, -1)  # (B, T, C)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            return x  # (B, T, C): unpadded or exporting; ONNX fusers match this 3-D layout
        rows = x.reshape(self.batch * self.seq, x.shape[-1])  # (B*T, C)
        return rows.index_select(0, self.index)  # (N, C)


class SelfAttention(nn.Module):
    """Multi-head self-attention. `use_sdpa=False` spells the math out, which ONNX fusers match."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = Linear(config.hidden_size, config.hidden_size)
        self.key = Linear(config.hidden_size, config.hidden_size)
        self.value = Linear(config.hidden_size, config.hidden_size)
        self.output = Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self.use_sdpa = True

    def split_heads(self, rows: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        x = layout.pad(rows)  # (B, T, H)
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | None, layout: TokenLayout) -> torch.Tensor:
        """x: (N, H) rows of real tokens -> (N, H)."""
        q = self.split_heads(self.query(x), layout)  # (B, nh, T, hs)
        k = self.split_heads(self.key(x), layout)  # (B, nh, T, hs)
        v = self.split_heads(self.value(x), layout)  # (B, nh, T, hs)
        B, _, T, _ = q.shape
        dropout_p = self.dropout_p if self.training else 0.0
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias, dropout_p=dropout_p)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)  # (B, nh, T, T)
            if mask_bias is not None:
                scores = scores + mask_bias
            probs = F.dropout(torch.softmax(scores, dim=-1), dropout_p, self.training)
            y = torch.matmul(probs, v)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H)
        return self.output(layout.unpad(y))  # (N, H)


class FeedForward(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.up = Linear(config.hidden_size, config.intermediate_size)
        self.down = Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Layer(nn.Module):
    """Post-LN transformer layer, as in the original BERT."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | None, layout: TokenLayout) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, mask_bias, layout)))
        x = self.output_norm(x + self.dropout(self.feed_forward(x)))
        return x


class Pooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H) from [CLS]


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 1/0 mask -> (B, 1, 1, T) additive bias: 0 for real tokens, a huge negative for padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min  # (B, 1, 1, T)


def plan_layout(attention_mask: torch.Tensor | None, batch: int, seq: int) -> tuple[TokenLayout, bool]:
    """(layout, padded?). Padded batches in eager mode are packed to their real tokens.

    The check is data-dependent, so while exporting or compiling the graph keeps the plain
    padded layout and always applies the mask.
    """
    if attention_mask is None:
        return TokenLayout(batch, seq, None), False
    if _tracing():
        return TokenLayout(batch, seq, None), True
    flat = attention_mask.reshape(-1).bool()
    if bool(flat.all()):
        return TokenLayout(batch, seq, None), False
    return TokenLayout(batch, seq, flat.nonzero().squeeze(1)), True


class BertModel(nn.Module):
    """The encoder: embeddings, `num_hidden_layers` layers and an optional pooler."""

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config) if add_pooler else None

    def set_attention_implementation(self, name: str) -> None:
        """'sdpa' (fast in PyTorch) or 'eager' (explicit math, for ONNX export and fusion)."""
        if name not in ("sdpa", "eager"):
            raise ValueError(f"attention implementation must be 'sdpa' or 'eager', not {name!r}")
        for layer in self.layers:
            layer.attention.use_sdpa = name == "sdpa"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> EncoderOutput:
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                f"({self.config.max_position_embeddings})"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        B, T = input_ids.shape
        layout, padded = plan_layout(attention_mask, B, T)
        x = layout.unpad(self.embeddings(input_ids, token_type_ids))  # (N, H): real tokens only
        mask_bias = padding_bias(attention_mask, x.dtype) if padded else None
        for layer in self.layers:
            x = layer(x, mask_bias, layout)
        hidden = layout.pad(x)  # (B, T, H); padded positions are zero
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return EncoderOutput(last_hidden_state=hidden, pooler_output=pooled)


def init_weights(module: nn.Module, config: BertConfig) -> None:
    """BERT's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=config.initializer_range)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=config.initializer_range)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
