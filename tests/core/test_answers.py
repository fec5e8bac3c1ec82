"""The answerers: their options are the HTTP API's fields and defaults, their answers shaped as it returns them."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from core.inference.answers import ANSWERERS, InputError, ModelSpec, Qa, QaOptions, answerer_for
from model.tokenizer import BertTokenizer
from service import schemas
from tests.helpers.bundles import tiny_vocab

REQUESTS = {
    "sequence-classification": schemas.ClassifyRequest,
    "token-classification": schemas.NerRequest,
    "question-answering": schemas.QaRequest,
    "embedding": schemas.EmbedRequest,
    "fill-mask": schemas.FillMaskRequest,
}


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_vocab(tiny_vocab(), lowercase=True)


@pytest.mark.parametrize("task", sorted(ANSWERERS))
def test_options_are_the_request_fields_with_their_defaults(task):
    _, options = ANSWERERS[task]
    request = REQUESTS[task].model_fields
    for f in fields(options):
        assert f.name in request, f"{options.__name__}.{f.name} is no field of {REQUESTS[task].__name__}"
        assert f.default == request[f.name].default, f"{options.__name__}.{f.name}"


def test_unknown_options_are_refused():
    model = ModelSpec("m", "sequence-classification", ["a", "b"], 16)
    with pytest.raises(ValueError, match="takes the options"):
        answerer_for(model, {"top_k": 1, "aggregation_strategy": "first"})
    assert answerer_for(model, {"top_k": 1}).options.top_k == 1


def test_too_long_without_truncation_names_the_input(tokenizer):
    model = ModelSpec("m", "sequence-classification", ["a", "b"], 8)
    classify = answerer_for(model, {"truncate": False})
    with pytest.raises(InputError) as err:
        classify.encode(tokenizer, ["the film", "the film was very good and the acting was great"])
    assert (err.value.field, err.value.index) == ("inputs[1]", 1)
    inputs, _ = answerer_for(model).encode(tokenizer, ["the film was very good and the acting was great"])
    assert len(inputs[0]) == 8  # truncate: true, the default, cuts instead


def test_qa_gives_one_answer_for_top_k_1_and_a_list_above(tokenizer):
    model = ModelSpec("m", "question-answering", None, 32)
    pairs = [("who ?", "john smith said the film was good")]

    def answers(options):
        qa = Qa(model, options)
        inputs, state = qa.encode(tokenizer, pairs)
        rng = np.random.default_rng(0)
        outputs = [{"start_logits": rng.normal(size=len(x)), "end_logits": rng.normal(size=len(x))} for x in inputs]
        return qa.answers(state, outputs)

    (one,) = answers(QaOptions())
    assert set(one) == {"answer", "score", "start", "end"}
    (three,) = answers(QaOptions(top_k=3, handle_impossible_answer=True))
    assert isinstance(three, list) and len(three) == 3 and three[0] == max(three, key=lambda a: a["score"])
