"""Request and response models of the HTTP API, with the examples shown at /docs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def _valid_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError("text is not valid UTF-8 (it holds an unpaired surrogate escape such as \\ud800)") from err
    return value


Text = Annotated[str, AfterValidator(_valid_text)]
TextPair = Annotated[list[Text], Field(min_length=2, max_length=2)]
Texts = Annotated[list[Text], Field(min_length=1)]
TextPairs = Annotated[list[TextPair], Field(min_length=1)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        pattern=MODEL_NAME_PATTERN,
        description="Bundle name (see GET /v1/models); default: the first loaded bundle of this task.",
    )
    timeout_ms: int | None = Field(
        None, ge=1, description="Deadline for this request; past it the answer is 504. Overrides X-Request-Timeout."
    )


class _Response(BaseModel):
    model: str = Field(..., description="The model that answered.")
    model_version: str | None = Field(
        None,
        description="The model-store version that answered (its directory name); null for a bundle given by path "
        "or an unversioned store model.",
    )


# --- classify --------------------------------------------------------------------------------


class ClassifyRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"inputs": "a gripping, beautifully shot film", "top_k": 2},
                {"inputs": [["A man is eating.", "Someone eats."]], "model": "mnli"},
            ]
        },
    )

    inputs: Text | Texts | TextPairs = Field(
        ..., description="A text, a list of texts, or a list of [text, text_pair] pairs."
    )
    top_k: int | None = Field(None, ge=1, description="Keep the k best labels per input; default: all, sorted.")
    truncate: bool = Field(True, description="Cut inputs longer than the model's max_seq_len; false = 422 instead.")


class LabelScore(BaseModel):
    label: str
    score: float


class ClassifyResponse(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "sst2",
                    "results": [[{"label": "positive", "score": 0.98}, {"label": "negative", "score": 0.02}]],
                }
            ]
        }
    )

    results: list[list[LabelScore]] = Field(..., description="Per input, labels sorted by score (best first).")


# --- ner -------------------------------------------------------------------------------------


class NerRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"inputs": "Angela Merkel met Emmanuel Macron in Paris.", "aggregation_strategy": "simple"},
                {"inputs": ["José lives in São Paulo.", "李明在北京工作。"], "aggregation_strategy": "first"},
            ]
        },
    )

    inputs: Text | Texts
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] = Field(
        "simple",
        description="As in the Hugging Face token-classification pipeline: none = one entity per token; "
        "simple = group adjacent B-/I- tags; first/average/max = agree on whole words first.",
    )
    ignore_labels: list[str] | None = Field(None, description='Entity groups to leave out; default ["O"].')
    stride: int | None = Field(
        None,
        ge=0,
        description="Tokens shared by consecutive windows of a long input; default: the model's fine-tuning "
        "stride (as `bert evaluate` uses), else a quarter window.",
    )


class Entity(BaseModel):
    entity_group: str = Field(..., description="Entity type; with aggregation none, the full tag (e.g. B-PER).")
    score: float
    word: str = Field(..., description="The input's own text: inputs[i][start:end].")
    start: int = Field(..., description="Character offset (Python string index) of the first character.")
    end: int = Field(..., description="Character offset one past the last character.")
    index: int | None = Field(None, description="Token position (aggregation none only).")


class NerResponse(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "conll",
                    "results": [
                        [
                            {"entity_group": "PER", "score": 0.99, "word": "Angela Merkel", "start": 0, "end": 13},
                            {"entity_group": "LOC", "score": 0.98, "word": "Paris", "start": 37, "end": 42},
                        ]
                    ],
                }
            ]
        }
    )

    results: list[list[Entity]]


# --- qa --------------------------------------------------------------------------------------


class QaPair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: Text = Field(..., min_length=1)
    context: Text = Field(..., min_length=1)


class QaRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "inputs": {
                        "question": "Where is the Eiffel Tower?",
                        "context": "The Eiffel Tower is a wrought-iron tower in Paris, France.",
                    }
                },
                {"inputs": [{"question": "Who wrote it?", "context": "It was written by Mary Shelley."}], "top_k": 3},
            ]
        },
    )

    inputs: QaPair | Annotated[list[QaPair], Field(min_length=1)]
    top_k: int = Field(1, ge=1, le=100, description="Answers per question; more than 1 returns a list.")
    max_answer_len: int = Field(30, ge=1, le=512, description="Longest answer in tokens.")
    doc_stride: int | None = Field(
        None,
        ge=0,
        description="Tokens shared by consecutive windows of a long context; default: the model's fine-tuning "
        "doc stride (as `bert evaluate` uses), else 128.",
    )
    handle_impossible_answer: bool = Field(False, description="Allow the empty answer (SQuAD 2.0 models).")


class Answer(BaseModel):
    answer: str
    score: float
    start: int = Field(..., description="Character offset into the context.")
    end: int


class QaResponse(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "squad", "results": [{"answer": "Paris", "score": 0.93, "start": 44, "end": 49}]}]
        }
    )

    results: list[Answer | list[Answer]] = Field(..., description="Per question: an answer, or a list when top_k > 1.")


# --- embed -----------------------------------------------------------------------------------


class EmbedRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": ["first sentence", "second one"], "normalize": True}]},
    )

    inputs: Text | Texts
    normalize: bool = Field(True, description="Scale each vector to unit length.")
    truncate: bool = Field(True, description="Cut inputs longer than the model's max_seq_len; false = 422 instead.")


class EmbedResponse(_Response):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "minilm", "dim": 3, "embeddings": [[0.1, 0.2, 0.97]]}]}
    )

    dim: int
    embeddings: list[list[float]]


# --- fill-mask -------------------------------------------------------------------------------


class FillMaskRequest(_Request):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"inputs": "Paris is the [MASK] of France.", "top_k": 3}]}
    )

    inputs: Text | Texts = Field(..., description="Texts holding at least one [MASK] token each.")
    top_k: int = Field(5, ge=1, le=100)


class MaskPrediction(BaseModel):
    token: int
    token_str: str
    score: float
    sequence: str = Field(..., description="The input with this mask filled in.")


class FillMaskResponse(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "bert-mlm",
                    "results": [
                        [
                            [
                                {
                                    "token": 3007,
                                    "token_str": "capital",
                                    "score": 0.9,
                                    "sequence": "paris is the capital of france.",
                                }
                            ]
                        ]
                    ],
                }
            ]
        }
    )

    results: list[list[list[MaskPrediction]]] = Field(..., description="Per input, per [MASK], the top_k tokens.")


# --- tokenize --------------------------------------------------------------------------------


class TokenizeRequest(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": "Héllo wörld 你好"}, {"inputs": [["question?", "context"]]}]},
    )

    inputs: Text | Texts | TextPairs


class TokenizedText(BaseModel):
    tokens: list[str]
    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]] = Field(..., description="Character offsets into the (first or second) text.")
    sequence_ids: list[int | None]


class TokenizeResponse(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "sst2",
                    "results": [
                        {
                            "tokens": ["[CLS]", "hello", "[SEP]"],
                            "ids": [101, 7592, 102],
                            "type_ids": [0, 0, 0],
                            "offsets": [[0, 0], [0, 5], [0, 0]],
                            "sequence_ids": [None, 0, None],
                        }
                    ],
                }
            ]
        }
    )

    results: list[TokenizedText]


# --- models, health, errors ------------------------------------------------------------------


class RefusedVersion(BaseModel):
    version: str | None
    reason: str = Field(..., description="Why it was refused: the file or bundle.json field at fault.")


class ModelInfo(BaseModel):
    name: str
    task: str
    labels: list[str] | None
    max_seq_len: int
    precision: str
    batch_invariant: bool = Field(
        ...,
        description="Whether each input's answer is independent of the other inputs batched with it. False for "
        "dynamically quantised int8 bundles (one activation scale per batch): their scores move with batch-mates.",
    )
    provider: str | None = Field(..., description="Execution provider the session runs on; null while not loaded.")
    default: bool = Field(..., description="Whether requests of this task without `model` go here.")
    max_batch_tokens: int
    max_batch_size: int
    loaded: bool = Field(
        True, description="False for a model-store model that is not loaded now: its next request loads it."
    )
    version: str | None = Field(
        None,
        description="The model-store version that serves (or will load on first use); null for a bundle given by "
        "path or an unversioned store model.",
    )
    versions: list[str] = Field(
        default_factory=list, description="Every version in the model store, newest first (empty for --bundles)."
    )
    refused: list[RefusedVersion] = Field(
        default_factory=list,
        description="Versions that failed to load or verify (tried again once their files change).",
    )


class ModelsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "models": [
                        {
                            "name": "sst2",
                            "task": "sequence-classification",
                            "labels": ["negative", "positive"],
                            "max_seq_len": 128,
                            "precision": "int8",
                            "batch_invariant": True,
                            "provider": "CPUExecutionProvider",
                            "default": True,
                            "max_batch_tokens": 16384,
                            "max_batch_size": 64,
                            "loaded": True,
                            "version": "3",
                            "versions": ["3", "2", "1"],
                            "refused": [],
                        }
                    ]
                }
            ]
        }
    )

    models: list[ModelInfo] = Field(
        ..., description="Bundles given by path, then the model store's models (loaded or not), by name."
    )


class ReloadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "sst2", "version": "3", "previous_version": "2", "changed": True}]}
    )

    model: str
    version: str | None = Field(..., description="The version that serves now (null: unversioned, or removed).")
    previous_version: str | None = Field(..., description="The version that served before (null: none loaded).")
    changed: bool = Field(..., description="False when the newest version was already serving.")


class Status(BaseModel):
    status: str
    detail: str | None = None


class ErrorDetail(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    type: str = Field(..., description="Machine-readable kind, e.g. validation_error, queue_full, model_not_found.")
    message: str = Field(..., description="What went wrong and what to change.")
    details: list[ErrorDetail] | None = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "type": "validation_error",
                        "message": "body.top_k: Input should be greater than or equal to 1",
                        "details": [{"field": "body.top_k", "reason": "Input should be greater than or equal to 1"}],
                        "request_id": "3f2c9a",
                    }
                }
            ]
        }
    )

    error: ErrorBody
