import pytest
import torch

from model import build_model
from tests.helpers.tolerances import network_tolerance


def test_padding_does_not_change_real_tokens(tiny_config):
    model = build_model(tiny_config).eval()
    ids = torch.randint(5, tiny_config.vocab_size, (1, 7))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 5)], dim=1).long()
    with torch.no_grad():
        alone = model(ids).last_hidden_state
        with_pad = model(padded, mask).last_hidden_state[:, :7]
    # other sequence lengths, other matmul blocking: rounding differs in every layer
    tolerance = network_tolerance(tiny_config.num_hidden_layers, tiny_config.intermediate_size, alone.abs().max())
    assert (alone - with_pad).abs().max() <= tolerance


def test_eager_attention_matches_sdpa(tiny_config):
    model = build_model(tiny_config, "question-answering").eval()
    ids = torch.randint(5, tiny_config.vocab_size, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        fast = model(ids, mask)
        model.bert.set_attention_implementation("eager")
        slow = model(ids, mask)
    real = mask.bool()
    # two attention kernels: rounding differs in every layer
    layers, width = tiny_config.num_hidden_layers, tiny_config.intermediate_size
    tolerance = network_tolerance(layers, width, slow.start_logits[real].abs().max())
    assert (fast.start_logits - slow.start_logits)[real].abs().max() <= tolerance


def test_mlm_positions_project_only_those_rows(tiny_config):
    model = build_model(tiny_config, "pretraining").eval()
    ids = torch.randint(5, tiny_config.vocab_size, (2, 9))
    positions = torch.tensor([1, 4, 12])  # flat indices into B*T
    with torch.no_grad():
        full = model(ids).mlm_logits.reshape(-1, tiny_config.vocab_size)
        some = model(ids, mlm_positions=positions).mlm_logits
    assert some.shape == (3, tiny_config.vocab_size)
    # same encoder output; the head's transform and decoder (hidden_size terms each) run on other row counts
    tolerance = network_tolerance(2, tiny_config.hidden_size, full[positions].abs().max())
    assert (full[positions] - some).abs().max() <= tolerance


def test_sequence_too_long_is_a_clear_error(tiny_config):
    model = build_model(tiny_config)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.zeros(1, tiny_config.max_position_embeddings + 1, dtype=torch.long))


def test_unknown_head():
    from model import BertConfig

    with pytest.raises(ValueError, match="unknown head"):
        build_model(BertConfig.preset("tiny"), "summarization")
