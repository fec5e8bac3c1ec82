import pytest
import torch
from torch import nn

from model.linear import Linear, _bf16_cpu_training
from tests.helpers.tolerances import BF16_EPS


def pair(seed=0):
    torch.manual_seed(seed)
    ref = nn.Linear(48, 80)
    ours = Linear(48, 80)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def grads(layer, x, autocast: bool):
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = layer(x)
    (y.float() * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
    return y.detach().float(), x.grad, layer.weight.grad, layer.bias.grad


def test_state_dict_is_that_of_nn_linear():
    ref, ours = pair()
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    assert isinstance(ours, nn.Linear)


def test_fp32_is_exactly_f_linear():
    ref, ours = pair()
    x = torch.randn(3, 7, 48)
    for a, b in zip(grads(ref, x, autocast=False), grads(ours, x, autocast=False)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(64, 48), (2, 9, 48)])
def test_bf16_autocast_matches_f_linear_within_bf16_rounding(shape):
    ref, ours = pair()
    x = torch.randn(*shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _bf16_cpu_training(x)
    expected, got = grads(ref, x, autocast=True), grads(ours, x, autocast=True)
    assert got[0].dtype == expected[0].dtype
    for a, b in zip(expected, got):
        assert a.shape == b.shape and a.dtype == b.dtype
        # same bf16 products summed in fp32 in another order: a result may round to the neighbouring bf16 value
        assert (a - b).abs().max().item() <= BF16_EPS * a.abs().max().item()


def test_inference_and_fp32_training_take_the_plain_path():
    x = torch.randn(4, 48)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _bf16_cpu_training(x)
    with torch.autocast("cpu", dtype=torch.float16):
        assert not _bf16_cpu_training(x)
