"""Compare the gradients left by one backward pass in our model and in transformers' counterpart."""

from __future__ import annotations

import torch

from tests.helpers.tolerances import network_tolerance


def total_grad_norm(model: torch.nn.Module) -> float:
    return torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None)).item()


def assert_same_gradients(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Word-embedding gradients equal element-wise and total gradient norms equal, up to fp32 rounding."""
    ours_grad = ours.bert.embeddings.word_embeddings.weight.grad
    theirs_grad = theirs.bert.embeddings.word_embeddings.weight.grad
    # a forward and a backward pass through every layer, rounded by two implementations
    relative = network_tolerance(2 * ours.config.num_hidden_layers, ours.config.intermediate_size, 1.0)
    assert (ours_grad - theirs_grad).abs().max() <= relative * theirs_grad.abs().max()
    ours_total, theirs_total = total_grad_norm(ours), total_grad_norm(theirs)
    assert abs(ours_total - theirs_total) <= relative * theirs_total
