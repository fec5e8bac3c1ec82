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
    # Only with `output_hidden_states` / `output_attentions` (distillation); None otherwise.
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + each layer's output, (B, T, H) each
    attentions: tuple[torch.Tensor, ...] | None = None  # each layer's attention probabilities, (B, nh, T, T)


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

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | None, layout: TokenLayout, return_probs: bool = False):
        """x: (N, H) rows of real tokens -> (N, H); with `return_probs`, also the (B, nh, T, T) probabilities."""
        q = self.split_heads(self.query(x), layout)  # (B, nh, T, hs)
        k = self.split_heads(self.key(x), layout)  # (B, nh, T, hs)
        v = self.split_heads(self.value(x), layout)  # (B, nh, T, hs)
        B, _, T, _ = q.shape
        dropout_p = self.dropout_p if self.training else 0.0
        probs = None
        if self.use_sdpa and not return_probs:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias, dropout_p=dropout_p)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)  # (B, nh, T, T)
            if mask_bias is not None:
                scores = scores + mask_bias
            probs = torch.softmax(scores, dim=-1)  # (B, nh, T, T)
            y = torch.matmul(F.dropout(probs, dropout_p, self.training), v)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, H)
        y = self.output(layout.unpad(y))  # (N, H)
        return (y, probs) if return_probs else y


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

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | None, layout: TokenLayout, return_probs: bool = False):
        if return_probs:  # distillation: the attention probabilities too, through the explicit math
            attended, probs = self.attention(x, mask_bias, layout, return_probs=True)
        else:
            attended, probs = self.attention(x, mask_bias, layout), None
        x = self.attention_norm(x + self.dropout(attended))
        x = self.output_norm(x + self.dropout(self.feed_forward(x)))
        return (x, probs) if return_probs else x


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
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> EncoderOutput:
        """`output_hidden_states` / `output_attentions` (for distillation) also return every layer's
        (B, T, H) output and (B, nh, T, T) attention probabilities; the default path is unchanged."""
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
        if output_hidden_states or output_attentions:
            return self._forward_with_internals(x, mask_bias, layout, output_hidden_states, output_attentions)
        for layer in self.layers:
            x = layer(x, mask_bias, layout)
        hidden = layout.pad(x)  # (B, T, H); padded positions are zero
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return EncoderOutput(last_hidden_state=hidden, pooler_output=pooled)

    def _forward_with_internals(
        self, x: torch.Tensor, mask_bias, layout: TokenLayout, keep_hidden: bool, keep_attentions: bool
    ) -> EncoderOutput:
        hidden_states, attentions = [layout.pad(x)], []  # (B, T, H) embeddings first
        for layer in self.layers:
            x, probs = layer(x, mask_bias, layout, return_probs=True)
            hidden_states.append(layout.pad(x))  # (B, T, H)
            attentions.append(probs)  # (B, nh, T, T)
        hidden = hidden_states[-1]  # (B, T, H); padded positions are zero
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return EncoderOutput(
            last_hidden_state=hidden,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if keep_hidden else None,
            attentions=tuple(attentions) if keep_attentions else None,
        )


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
