"""Property-based API test from /openapi.json: no 5xx and no response that breaks the schema."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)


@pytest.fixture(scope="module")
def api_schema(client):
    # `client` (conftest) holds the app's lifespan open: bundles loaded, batchers running.
    return schemathesis.openapi.from_asgi("/openapi.json", client.app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case):
    response = case.call()
    # 504 is the documented answer to a deadline the client itself set (timeout_ms: 1 is valid input)
    assert response.status_code < 500 or response.status_code == 504, response.text
    case.validate_response(
        response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
    )
