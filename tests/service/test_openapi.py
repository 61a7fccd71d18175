"""`/openapi.json` says what the server does: every route is in it, and the API keeps to it (schemathesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from starlette.routing import Route

from tests.service.conftest import Served

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

schemathesis.serializer.alias("application/vnd.custody.statement", "application/octet-stream")

TILE_ROUTE = "/tile/{path:path}"
TILE_PATHS = {"/tile/{level}/{index}", "/tile/entries/{index}"}  # what the tile route serves, as OpenAPI spells it


def test_every_route_is_in_the_openapi_document_and_nothing_else(served: Served) -> None:
    with served.client() as http:
        document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    served_routes = set()
    for route in served.app.routes:
        assert isinstance(route, Route)
        methods = (route.methods or set()) - {"HEAD"}
        paths = TILE_PATHS if route.path == TILE_ROUTE else {route.path}
        served_routes |= {(p, m) for p in paths for m in methods}
    assert served_routes == documented


def test_the_api_keeps_to_its_openapi_document(sqlite_served: Served) -> None:
    served = sqlite_served
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11  # every path of the document
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def keeps_to_it(case: object) -> None:
            case.call_and_validate(base_url=served.url, checks=checks)  # type: ignore[attr-defined]

        keeps_to_it()
