"""Task metrics: classification, entity-level NER (conlleval/seqeval) and SQuAD EM/F1. numpy only."""

from training.metrics.classification import classification_metrics, multilabel_metrics, regression_metrics
from training.metrics.ner import entity_metrics, get_entities
from training.metrics.squad import exact_match_score, f1_score, normalize_answer, squad_metrics

__all__ = [
    "classification_metrics",
    "entity_metrics",
    "exact_match_score",
    "f1_score",
    "get_entities",
    "multilabel_metrics",
    "normalize_answer",
    "regression_metrics",
    "squad_metrics",
]
