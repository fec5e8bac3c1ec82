"""Task heads on top of the encoder. Each returns logits; losses live in `training/`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.bert import BertModel, EncoderOutput, activation, init_weights
from model.config import BertConfig
from model.linear import Linear, linear


@dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, num_labels) for sequences, (B, T, num_labels) for tokens


@dataclass
class QuestionAnsweringOutput:
    start_logits: torch.Tensor  # (B, T)
    end_logits: torch.Tensor  # (B, T)


@dataclass
class PreTrainingOutput:
    mlm_logits: torch.Tensor  # (B, T, V), or (N, V) at the N positions asked for
    nsp_logits: torch.Tensor  # (B, 2); class 0 = "is next", 1 = "random"


class MaskedLMHead(nn.Module):
    """Transform (dense + activation + LayerNorm), then a decoder tied to the word embeddings."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder_weight = word_embeddings.weight  # tied: the same Parameter object
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.act(self.dense(hidden)))
        return linear(x, self.decoder_weight, self.bias)  # (..., V)


class NextSentenceHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.classifier = Linear(config.hidden_size, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled)  # (B, 2)


class BertEncoder(nn.Module):
    """A bare encoder (no task head): `forward` returns last_hidden_state and pooler_output."""

    head_name = None
    hf_architecture = "BertModel"
    hf_prefix = ""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=True)
        init_weights(self, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.bert(input_ids, attention_mask, token_type_ids)


class BertForPreTraining(nn.Module):
    head_name = "pretraining"
    hf_architecture = "BertForPreTraining"
    hf_prefix = "bert."

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=True)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word_embeddings)
        self.nsp = NextSentenceHead(config)
        init_weights(self, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mlm_positions=None):
        """`mlm_positions` (N,) flat indices into B*T: project only those rows onto the vocabulary."""
        out = self.bert(input_ids, attention_mask, token_type_ids)
        hidden = out.last_hidden_state  # (B, T, H)
        if mlm_positions is not None:
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mlm_positions)  # (N, H)
        return PreTrainingOutput(mlm_logits=self.mlm(hidden), nsp_logits=self.nsp(out.pooler_output))


class BertForSequenceClassification(nn.Module):
    """Single-label (softmax), multi-label (sigmoid) or regression (1 output) on the pooled [CLS]."""

    head_name = "sequence-classification"
    hf_architecture = "BertForSequenceClassification"
    hf_prefix = "bert."

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.bert = BertModel(config, add_pooler=True)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = Linear(config.hidden_size, num_labels)
        init_weights(self, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.head_output(self.bert(input_ids, attention_mask, token_type_ids))

    def head_output(self, encoded: EncoderOutput) -> ClassifierOutput:
        """The head on an encoder output (distillation runs the encoder itself to keep its internals)."""
        return ClassifierOutput(logits=self.classifier(self.dropout(encoded.pooler_output)))  # (B, L)


class BertForTokenClassification(nn.Module):
    head_name = "token-classification"
    hf_architecture = "BertForTokenClassification"
    hf_prefix = "bert."

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.bert = BertModel(config, add_pooler=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = Linear(config.hidden_size, num_labels)
        init_weights(self, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.head_output(self.bert(input_ids, attention_mask, token_type_ids))

    def head_output(self, encoded: EncoderOutput) -> ClassifierOutput:
        return ClassifierOutput(logits=self.classifier(self.dropout(encoded.last_hidden_state)))  # (B, T, L)


class BertForQuestionAnswering(nn.Module):
    head_name = "question-answering"
    hf_architecture = "BertForQuestionAnswering"
    hf_prefix = "bert."

    def __init__(self, config: BertConfig, num_labels: int = 2):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.qa_outputs = Linear(config.hidden_size, 2)
        init_weights(self, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.head_output(self.bert(input_ids, attention_mask, token_type_ids))

    def head_output(self, encoded: EncoderOutput) -> QuestionAnsweringOutput:
        start, end = self.qa_outputs(encoded.last_hidden_state).unbind(dim=-1)  # (B, T) each
        return QuestionAnsweringOutput(start_logits=start, end_logits=end)


def _classifier_dropout(config: BertConfig) -> float:
    if config.classifier_dropout is not None:
        return config.classifier_dropout
    return config.hidden_dropout_prob


HEADS: dict[str | None, type[nn.Module]] = {
    None: BertEncoder,
    "pretraining": BertForPreTraining,
    "sequence-classification": BertForSequenceClassification,
    "token-classification": BertForTokenClassification,
    "question-answering": BertForQuestionAnswering,
}


def build_model(config: BertConfig, head: str | None = None, num_labels: int | None = None) -> nn.Module:
    """A freshly initialised model with the given head."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {[h for h in HEADS if h]} or None")
    cls = HEADS[head]
    if head in ("sequence-classification", "token-classification"):
        num_labels = num_labels or len(config.labels) or 2
        if config.labels and len(config.labels) != num_labels:
            raise ValueError(f"num_labels={num_labels} but the config names {len(config.labels)} labels")
        return cls(config, num_labels)
    return cls(config)
