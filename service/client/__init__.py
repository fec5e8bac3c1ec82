"""Python client of the bertkit service (sync and async, on httpx): one method per endpoint, typed results.

    from service.client import Client
    with Client("http://127.0.0.1:8000") as bert:
        bert.classify("a gripping, beautifully shot film")[0].label        # 'positive'
        [e.entity_group for e in bert.ner("Angela Merkel visited Paris.")]  # ['PER', 'LOC']
        bert.qa("Where is the tower?", "The tower is in Paris.").answer    # 'Paris'

`AsyncClient` has the same methods as coroutines. A single text (or pair, or question) gives a single
result; a list gives a list. Results are the response models of `service/schemas.py` (pydantic), the
classes the service itself answers with. 429 and 503 answers are retried after the server's
`Retry-After` (seconds or an HTTP date; exponential backoff when absent), at most `max_retries`
times; other errors raise `ServiceError` with the server's message.

The parts: `calls` (each endpoint's request and how its answer is read), `retry` (when to retry,
error answers), `endpoints` (the public methods, once for both clients), `sync` and `aio` (sending).
Only httpx and pydantic are imported: no fastapi, onnxruntime or torch.
"""

from service.client.aio import AsyncClient
from service.client.endpoints import DEFAULT_URL
from service.client.retry import RETRY_STATUSES, ServiceError, retry_delay
from service.client.sync import Client
from service.schemas import Answer, EmbedResponse, Entity, LabelScore, MaskPrediction, ModelInfo, TokenizedText

__all__ = [
    "DEFAULT_URL",
    "RETRY_STATUSES",
    "Answer",
    "AsyncClient",
    "Client",
    "EmbedResponse",
    "Entity",
    "LabelScore",
    "MaskPrediction",
    "ModelInfo",
    "ServiceError",
    "TokenizedText",
    "retry_delay",
]
