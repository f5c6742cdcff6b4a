"""The worker's HTTP API against its own OpenAPI document, on a real worker: every endpoint it
serves is documented (and nothing documented is missing), the document is valid OpenAPI, and a
property-based run (schemathesis, on hypothesis) drives every operation with generated
requests: no answer is a server error, and every answer's status, content type and body are
the documented ones."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from streams.worker.api import OPERATIONS

pytestmark = pytest.mark.integration

KEY = "s3cret"
#: Generated requests per operation (an erasure waits for its erasures: a few of those).
EXAMPLES = {"DELETE /customers/{customer_id}": 4}


def test_every_endpoint_is_documented_and_answers_as_documented(start_worker: Any) -> None:
    worker = start_worker(CRM360_API_KEY=KEY)
    status, document = worker.get("/openapi.json")
    assert status == 200 and "x-undocumented" not in document, document.get("x-undocumented")
    served = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    assert served == {(operation.method, operation.path) for operation in OPERATIONS}
    status, page = worker.get("/docs")
    assert status == 200 and "DELETE /customers/{customer_id}" in page

    schema = schemathesis.openapi.from_dict(document)  # refuses a document that is not valid OpenAPI
    auth = {"Authorization": f"Bearer {KEY}"}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation schemathesis cannot read is a defect of the document
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES.get(operation.label, 25),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def answers_as_documented(case: Any) -> None:
            response = case.call(base_url=worker.client.url, headers=auth, timeout=60)
            case.validate_response(response, checks=checks)

        answers_as_documented()
