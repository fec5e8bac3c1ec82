import pytest
import torch

from model import build_model
from training.optim import build_optimizer, build_scheduler, param_groups, warmup_linear_decay


def test_no_decay_on_biases_and_layernorm_and_tied_weight_once(tiny_config):
    model = build_model(tiny_config, "pretraining")
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert "bert.embeddings.word_embeddings.weight" in decayed
    assert "bert.layers.0.attention.query.weight" in decayed
    assert all(n.endswith("bias") or "norm" in n for n in undecayed)
    assert "bert.layers.0.attention_norm.weight" in undecayed and "mlm.bias" in undecayed
    total = len(decay["params"]) + len(no_decay["params"])
    assert total == len({id(p) for p in model.parameters()})  # the tied decoder counted once


def test_warmup_then_linear_decay_to_zero():
    values = [warmup_linear_decay(s, 4, 12) for s in range(13)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == 1.0 and values[8] == 0.5 and values[12] == 0.0
    assert all(a >= b for a, b in zip(values[4:], values[5:]))


def test_scheduler_drives_the_optimizer(tiny_config):
    model = build_model(tiny_config, "pretraining")
    opt = build_optimizer(model, lr=1e-3)
    sched = build_scheduler(opt, warmup_steps=2, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4])
    assert isinstance(opt, torch.optim.AdamW)
