"""Compare the gradients left by one backward pass in our model and in transformers' counterpart."""

from __future__ import annotations

import torch


def total_grad_norm(model: torch.nn.Module) -> float:
    return torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None)).item()


def assert_same_gradients(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Word-embedding gradients equal element-wise; total gradient norms equal to 1e-5 relative."""
    ours_grad = ours.bert.embeddings.word_embeddings.weight.grad
    theirs_grad = theirs.bert.embeddings.word_embeddings.weight.grad
    assert torch.allclose(ours_grad, theirs_grad, atol=1e-6)
    ours_total, theirs_total = total_grad_norm(ours), total_grad_norm(theirs)
    assert abs(ours_total - theirs_total) < 1e-5 * max(1.0, theirs_total)
