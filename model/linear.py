"""A drop-in `nn.Linear` whose bf16 backward on CPU avoids oneDNN's slow operand layout.

On CPUs without native bf16 (AVX2, AVX-512 without BF16), a bf16 matmul `A @ B` is several times
faster when exactly one operand is transposed in memory: row-major `A` with column-major `B`
(what the forward `x @ W.t()` gets) runs at 4-6 GFLOP/s on this project's 2-core machine, while
row-major `A` with row-major `B` (what autograd's `grad_out @ W` gets) runs at 0.8 GFLOP/s
(`benchmarks/pretraining_speed.py` has the figures). The backward below hands the input gradient
a column-major copy of `W` (a few hundred KB, copied once per step) so all three matmuls of a
linear layer take the fast path. Numerics are those of `F.linear`: same dtypes, same products.

Only bf16 training on CPU takes this path; fp32, inference, export and GPUs use `F.linear`.
Parameter names and shapes are those of `nn.Linear`, so checkpoints are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _column_major(t: torch.Tensor) -> torch.Tensor:
    """The same matrix with column-major storage: `t.t()` made contiguous, viewed back."""
    return t.t().contiguous().t()


class _Bf16CpuLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        rows = grad_out.reshape(-1, grad_out.shape[-1])  # (N, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (rows @ _column_major(weight)).view(*grad_out.shape[:-1], weight.shape[1])  # (..., in)
        if ctx.needs_input_grad[1]:
            grad_w = rows.t() @ x.reshape(-1, x.shape[-1])  # (out, in): column-major A, row-major B
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b


def _bf16_cpu_training(x: torch.Tensor) -> bool:
    if x.device.type != "cpu" or not torch.is_grad_enabled():
        return False
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu") == torch.bfloat16
    return x.dtype == torch.bfloat16


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, with the fast-layout backward for bf16 training on CPU."""
    if not _bf16_cpu_training(x) or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return F.linear(x, weight, bias)
    if torch.is_autocast_enabled("cpu"):  # cast as autocast would for F.linear, then run without it
        x, weight = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        bias = bias.to(torch.bfloat16) if bias is not None else None
        with torch.autocast("cpu", enabled=False):
            return _Bf16CpuLinear.apply(x, weight, bias)
    return _Bf16CpuLinear.apply(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and state dict) that routes through `linear` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
