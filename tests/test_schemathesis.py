"""schemathesis against a live hypercorn server, from the app's own /openapi.json.

schemathesis reads the published document, generates requests for every
operation (data the schema allows and data it forbids), sends them to a
real server, and runs all of its checks on each answer: no 5xx, a status
code and content type the document lists, a body that matches the listed
schema, schema-valid data accepted and schema-invalid data refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.schemas import BaseSchema

from qapp.testing import HypercornServer

pytestmark = pytest.mark.slow

#: Cases per operation, fixed, with derandomize, so CI runs the same ones each time.
EXAMPLES = 30

#: Cases sent, by operation: the README quotes them.
SENT: Counter[str] = Counter()


@pytest.fixture(scope="module")
def live(one_worker_server: HypercornServer) -> HypercornServer:
    """The module's live server."""
    return one_worker_server


@pytest.fixture(scope="module")
def api(live: HypercornServer) -> Iterator[BaseSchema]:
    """The API as the live server publishes it."""
    loaded = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    loaded.config.update(base_url=live.url)
    yield loaded
    # The figures the README quotes (seen with pytest -s).
    print(f"\nschemathesis: {len(SENT)} runs, {sum(SENT.values())} cases: {dict(SENT)}")


#: Every operation the document should publish. schemathesis's pytest loader
#: (``from_fixture``) fails on this pytest, so operations are listed here and
#: :func:`test_document_lists_every_operation` keeps the list honest.
OPERATIONS = [
    ("GET", "/"),
    ("GET", "/docs"),
    ("GET", "/health"),
    ("POST", "/counter/{name}"),
    ("GET", "/counter/{name}"),
    ("DELETE", "/counter/{name}"),
    ("GET", "/session/counter"),
    ("POST", "/session/counter/inc"),
    ("POST", "/session/counter/dec"),
    ("POST", "/session/counter/reset"),
    ("PUT", "/cache/{key}"),
    ("GET", "/cache/{key}"),
    ("DELETE", "/cache/{key}"),
    ("GET", "/memo/{key}"),
    ("GET", "/lab/session"),
    ("POST", "/lab/session/reset"),
    ("POST", "/lab/session/naive"),
    ("POST", "/lab/session/atomic"),
    ("GET", "/lab/stampede/{strategy}/{key}"),
    ("GET", "/lab/stampede/{strategy}/{key}/computations"),
    ("GET", "/lab/refresh/{mode}"),
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/logout"),
    ("GET", "/auth/me"),
]


def test_document_lists_every_operation(api: BaseSchema) -> None:
    """The published document has exactly the operations this test runs."""
    published = set()
    for result in api.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err fails here, as it should
        published.add((operation.method.upper(), operation.path))
    assert published == set(OPERATIONS)


#: Operations with inputs (a path parameter, a query or a body) that can be made invalid.
BODIES = {("POST", "/auth/register"), ("POST", "/auth/login")}
WITH_INPUTS = [op for op in OPERATIONS if "{" in op[1] or op in BODIES]
RUNS = [(*op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (*op, GenerationMode.NEGATIVE) for op in WITH_INPUTS
]


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_api_conforms_to_its_openapi_document(
    api: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    """The operation answers as documented, to data its schema allows and data it forbids."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=api[path][method].as_strategy(generation_mode=mode))
    def check(case: Case[Any]) -> None:
        SENT[f"{method} {path} {mode.value}"] += 1
        case.call_and_validate()

    check()
    assert SENT[f"{method} {path} {mode.value}"] >= 1
