"""Per task, the way from a request's inputs to its per-input answers, all but running the model.

An answerer has two steps around the model: `encode(tokenizer, inputs) -> (model inputs, state)`
and `answers(state, outputs) -> one answer per input`, each answer exactly the per-input result
of the HTTP response (`results[i]` of /v1/classify, /v1/ner, /v1/qa, /v1/fill-mask;
`embeddings[i]` of /v1/embed). The service queues the model inputs through its batcher
(service.engine), offline scoring runs them through core.batches.predict_inputs
(core.inference.offline, core.inference.ray); both call these same functions, so a file scored
offline gets the answers the service gives.

The options are the HTTP request's fields with the same defaults (tests/core/test_answers.py
holds them to service/schemas.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from core.batches import Feeds, ModelInput
from core.inference.classify import classify, encode_classify, softmax
from core.inference.ner import STRATEGIES, aggregate, encode_ner, merge_outputs
from core.inference.qa import QaWindows, answer_windows, encode_qa, model_inputs


class InputError(ValueError):
    """One input (or option) the model cannot take; `field` names it as the HTTP API does."""

    def __init__(self, field: str, reason: str, index: int | None = None):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.index = index  # the input's position in the call, when one input is at fault


@dataclass(frozen=True)
class ModelSpec:
    """What the answers need to know of a bundle."""

    name: str
    task: str
    labels: list[str] | None
    max_seq_len: int
    problem_type: str | None = None
    task_config: dict = field(default_factory=dict)  # the fine-tuning task.json (strides, query length)

    @classmethod
    def of(cls, bundle: Any) -> ModelSpec:
        """From a core.bundle.Bundle (or anything with its attributes)."""
        manifest = getattr(bundle, "manifest", None)
        return cls(
            name=bundle.name,
            task=bundle.task,
            labels=list(bundle.labels) if bundle.labels else None,
            max_seq_len=int(bundle.max_seq_len),
            problem_type=getattr(bundle, "problem_type", None),
            task_config=dict(getattr(manifest, "task_config", None) or {}),
        )


def _check_length(model: ModelSpec, encodings, truncate_hint: bool) -> None:
    for i, enc in enumerate(encodings):
        if len(enc) > model.max_seq_len:
            hint = "; shorten it or set truncate: true" if truncate_hint else "; shorten it"
            reason = f"has {len(enc)} tokens but model {model.name!r} takes at most {model.max_seq_len}{hint}"
            raise InputError(f"inputs[{i}]", reason, i)


# --- sequence classification ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int | None = None  # the k best labels per input; None = all, sorted
    truncate: bool = True  # cut inputs past max_seq_len; False = an InputError instead


@dataclass
class Classify:
    """Texts or [text, text_pair] pairs -> per input, `[{label, score}]` best first."""

    model: ModelSpec
    options: ClassifyOptions = ClassifyOptions()

    def encode(self, tokenizer, inputs: Sequence) -> tuple[list[ModelInput], None]:
        max_length = self.model.max_seq_len if self.options.truncate else None
        encodings, inputs = encode_classify(tokenizer, inputs, max_length)
        _check_length(self.model, encodings, truncate_hint=True)
        return inputs, None

    def answers(self, state: None, outputs: Sequence[Feeds]) -> list[list[dict]]:
        m = self.model
        return [classify(o["logits"], m.labels, m.problem_type, self.options.top_k) for o in outputs]


# --- embeddings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedOptions:
    normalize: bool = True  # scale each vector to unit length
    truncate: bool = True


@dataclass
class Embed:
    """Texts -> per input, its embedding as a list of floats."""

    model: ModelSpec
    options: EmbedOptions = EmbedOptions()

    def encode(self, tokenizer, inputs: Sequence[str]) -> tuple[list[ModelInput], None]:
        return Classify(self.model, ClassifyOptions(truncate=self.options.truncate)).encode(tokenizer, inputs)

    def answers(self, state: None, outputs: Sequence[Feeds]) -> list[list[float]]:
        vectors = []
        for o in outputs:
            v = np.asarray(o["embeddings"], dtype=np.float64)  # (H,)
            if self.options.normalize:
                v = v / max(float(np.linalg.norm(v)), 1e-12)
            vectors.append([float(x) for x in v])
        return vectors


# --- token classification ------------------------------------------------------------------------


@dataclass(frozen=True)
class NerOptions:
    aggregation_strategy: str = "simple"  # none | simple | first | average | max (the HF pipeline's)
    ignore_labels: list[str] | None = None  # entity groups left out; None = ["O"]
    stride: int | None = None  # tokens shared by windows; None = the bundle's fine-tuning stride

    def __post_init__(self):
        if self.aggregation_strategy not in STRATEGIES:
            raise ValueError(f"aggregation_strategy must be one of {STRATEGIES}, got {self.aggregation_strategy!r}")
        if self.stride is not None and self.stride < 0:
            raise ValueError(f"stride must be at least 0, got {self.stride}")


@dataclass
class Ner:
    """Texts -> per input, its entities `{entity_group, score, word, start, end}` (+ `index` for none)."""

    model: ModelSpec
    options: NerOptions = NerOptions()

    def encode(self, tokenizer, texts: Sequence[str]) -> tuple[list[ModelInput], tuple]:
        stride = self.options.stride if self.options.stride is not None else self.model.task_config.get("doc_stride")
        inputs, plans = encode_ner(tokenizer, texts, self.model.max_seq_len, stride)
        return inputs, (list(texts), plans)

    def answers(self, state: tuple, outputs: Sequence[Feeds]) -> list[list[dict]]:
        texts, plans = state
        o = self.options
        return [
            aggregate(text, plan.tokens, logits, self.model.labels, o.aggregation_strategy, o.ignore_labels)
            if plan.tokens
            else []
            for text, plan, logits in zip(texts, plans, merge_outputs(plans, outputs))
        ]


# --- question answering --------------------------------------------------------------------------


@dataclass(frozen=True)
class QaOptions:
    top_k: int = 1  # answers per question; 1 gives the answer itself, more a list
    max_answer_len: int = 30  # longest answer in tokens
    doc_stride: int | None = None  # tokens shared by context windows; None = the bundle's fine-tuning stride
    handle_impossible_answer: bool = False  # allow the empty answer (SQuAD 2.0 models)

    def __post_init__(self):
        if self.top_k < 1 or self.max_answer_len < 1:
            raise ValueError("top_k and max_answer_len must be at least 1")
        if self.doc_stride is not None and self.doc_stride < 0:
            raise ValueError(f"doc_stride must be at least 0, got {self.doc_stride}")


@dataclass
class Qa:
    """(question, context) pairs -> per pair, `{answer, score, start, end}`, or a list of them for top_k > 1."""

    model: ModelSpec
    options: QaOptions = QaOptions()

    def windows(self) -> QaWindows:
        windows = QaWindows.from_task_config(self.model.max_seq_len, self.model.task_config)
        if self.options.doc_stride is not None:
            windows = QaWindows(windows.max_seq_len, self.options.doc_stride, windows.max_query_len)
        try:
            windows.check()
        except ValueError as err:
            raise InputError("doc_stride", f"cannot be used with model {self.model.name!r}: {err}") from None
        return windows

    def encode(self, tokenizer, pairs: Sequence[tuple[str, str]]) -> tuple[list[ModelInput], tuple]:
        encoded = encode_qa(tokenizer, pairs, self.windows())
        return model_inputs(encoded), ([context for _, context in pairs], encoded)

    def answers(self, state: tuple, outputs: Sequence[Feeds]) -> list:
        contexts, encoded = state
        o = self.options
        rows = iter(outputs)
        results = []
        for context, pair_windows in zip(contexts, encoded):
            found = answer_windows(
                pair_windows,
                [next(rows) for _ in pair_windows],
                context,
                top_k=o.top_k + 5,
                max_answer_len=o.max_answer_len,
            )
            answers = [{"answer": s.text, "score": s.probability, "start": s.start, "end": s.end} for s in found.spans]
            if o.handle_impossible_answer:
                answers.append({"answer": "", "score": found.null_probability, "start": 0, "end": 0})
            answers.sort(key=lambda a: -a["score"])
            if not answers:  # no token of the context can hold an answer (e.g. only whitespace)
                answers = [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
            results.append(answers[0] if o.top_k == 1 else answers[: o.top_k])
        return results


# --- fill-mask -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FillMaskOptions:
    top_k: int = 5  # tokens per [MASK]

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")


@dataclass
class FillMask:
    """Texts holding [MASK] -> per input, per [MASK], the top_k `{token, token_str, score, sequence}`."""

    model: ModelSpec
    options: FillMaskOptions = FillMaskOptions()

    def encode(self, tokenizer, texts: Sequence[str]) -> tuple[list[ModelInput], tuple]:
        encodings = tokenizer.encode_batch(list(texts))
        for i, enc in enumerate(encodings):
            if tokenizer.mask_id not in enc.ids:
                raise InputError(f"inputs[{i}]", "holds no [MASK] token; put [MASK] where a word should go", i)
        _check_length(self.model, encodings, truncate_hint=False)
        return [ModelInput(e.ids, e.type_ids) for e in encodings], (tokenizer, encodings)

    def answers(self, state: tuple, outputs: Sequence[Feeds]) -> list[list[list[dict]]]:
        tokenizer, encodings = state
        mask_id, vocab_size = tokenizer.mask_id, tokenizer.vocab_size
        results = []
        for enc, out in zip(encodings, outputs):
            per_mask = []
            for pos in (p for p, token_id in enumerate(enc.ids) if token_id == mask_id):
                probs = softmax(out["logits"][pos][:vocab_size])  # (V,)
                best = np.argsort(-probs, kind="stable")[: self.options.top_k]
                predictions = []
                for token_id in best:
                    filled = list(enc.ids[1:-1])  # without [CLS] / [SEP]
                    filled[pos - 1] = int(token_id)
                    predictions.append(
                        {
                            "token": int(token_id),
                            "token_str": tokenizer.decode([int(token_id)]),
                            "score": float(probs[token_id]),
                            "sequence": tokenizer.decode(filled, skip_special_tokens=False),
                        }
                    )
                per_mask.append(predictions)
            results.append(per_mask)
        return results


# --- by task -------------------------------------------------------------------------------------

# task -> (answerer, its options)
ANSWERERS: dict[str, tuple[type, type]] = {
    "sequence-classification": (Classify, ClassifyOptions),
    "token-classification": (Ner, NerOptions),
    "question-answering": (Qa, QaOptions),
    "embedding": (Embed, EmbedOptions),
    "fill-mask": (FillMask, FillMaskOptions),
}


def answerer_for(model: ModelSpec, options: dict | None = None):
    """The task's answerer with `options` (the request fields by name; unknown names are an error)."""
    if model.task not in ANSWERERS:
        raise ValueError(f"no answers for task {model.task!r}")
    cls, options_cls = ANSWERERS[model.task]
    known = {f.name for f in fields(options_cls)}
    unknown = sorted(set(options or {}) - known)
    if unknown:
        raise ValueError(f"{model.task} takes the options {sorted(known)}, not {unknown}")
    return cls(model, options_cls(**(options or {})))
