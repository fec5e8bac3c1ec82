"""Post-processing shared by the service and evaluation: numpy only, no torch, no FastAPI."""

from service.postprocess.qa import AnswerSpan, QAResult, best_answer_spans

__all__ = ["AnswerSpan", "QAResult", "best_answer_spans"]
