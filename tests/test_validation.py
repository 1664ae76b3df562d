"""Request validation: strict JSON, the body checks' order, and the served API description."""

from __future__ import annotations

import httpx
import pytest
from quart import Quart

from qapp.service.validation import KEY_PATTERN, MAX_DEPTH, StrictJSONProvider
from tests.storedump import assert_json_error


def test_strict_json_refuses_what_stores_cannot_keep(app: Quart) -> None:
    """NaN, Infinity, overflowing numbers and too-deep nesting are ValueErrors, not values."""
    provider = StrictJSONProvider(app)
    too_deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    for text in ["NaN", "[-Infinity]", '{"a": 1e400}', "[" * 5000 + "]" * 5000, too_deep]:
        with pytest.raises(ValueError, match=r"."):
            provider.loads(text)
    assert provider.loads('{"a": [1.5, null, "x"]}') == {"a": [1.5, None, "x"]}
    deepest = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert provider.loads(deepest) is not None


@pytest.mark.parametrize(
    "text", ['"\\ud800"', '["a\\udfffb"]', '{"\\udbff": 1}', '"\\udc00\\ud800"']
)
def test_strict_json_refuses_lone_surrogates(app: Quart, text: str) -> None:
    """Escaped lone surrogates parse in Python but are not text a store can keep: refused."""
    with pytest.raises(ValueError, match="surrogate"):
        StrictJSONProvider(app).loads(text)
    # A proper pair is one character, and fine.
    assert StrictJSONProvider(app).loads('"\\ud83d\\ude00"') == "\U0001f600"


def test_key_pattern() -> None:
    """Keys are 1 to 200 characters from letters, digits and . _ : -."""
    assert KEY_PATTERN.fullmatch("a.B_c:d-9")
    assert KEY_PATTERN.fullmatch("k" * 200)
    for bad in ["", "k" * 201, "a b", "a/b", "a\nb", "é"]:
        assert not KEY_PATTERN.fullmatch(bad)


async def test_json_with_charset_and_suffix_types_are_json(client: httpx.AsyncClient) -> None:
    """application/json with a charset, and application/*+json, count as JSON."""
    for content_type in ["application/json; charset=utf-8", "application/vnd.qapp+json"]:
        response = await client.put(
            "/cache/k", content="[1]", headers={"content-type": content_type}
        )
        assert response.status_code == 204


async def test_unknown_route_is_404_whatever_the_body(client: httpx.AsyncClient) -> None:
    """A 404 stays a 404 when the body is also wrong: routing is answered first."""
    response = await client.post("/nowhere", content="x", headers={"content-type": "text/plain"})
    assert_json_error(response, 404, "not_found")


async def test_too_large_wins_over_wrong_type(client: httpx.AsyncClient) -> None:
    """An oversized body is a 413 whatever its type: it is never read."""
    response = await client.put("/cache/k", content=b"x" * 70_000)
    assert_json_error(response, 413)


async def test_body_on_get_is_ignored(client: httpx.AsyncClient) -> None:
    """A GET with a non-JSON body is answered; only state-changing requests need JSON."""
    response = await client.request(
        "GET", "/session/counter", content="x", headers={"content-type": "text/plain"}
    )
    assert response.json() == {"counter": 0}


async def test_openapi_describes_the_routes(client: httpx.AsyncClient) -> None:
    """/openapi.json lists every route group, its answers, the auth body and the key rule."""
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "qapp"
    paths = spec["paths"]
    for path in [
        "/health",
        "/session/counter",
        "/session/counter/inc",
        "/cache/{key}",
        "/memo/{key}",
        "/auth/register",
        "/auth/login",
        "/auth/logout",
        "/auth/me",
    ]:
        assert path in paths, path
    body = paths["/auth/register"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]
    ttl = [p for p in paths["/cache/{key}"]["put"]["parameters"] if p["name"] == "ttl"]
    assert ttl
    # Every operation lists its answers: a success and the JSON errors every route can give.
    for operations in paths.values():
        for operation in operations.values():
            statuses = set(operation["responses"])
            assert statuses & {"200", "201", "204"}, operation["operationId"]
            assert {"400", "413", "503"} <= statuses, operation["operationId"]
    (key,) = [p for p in paths["/cache/{key}"]["get"]["parameters"] if p["name"] == "key"]
    assert key["schema"]["pattern"] == f"^{KEY_PATTERN.pattern}$"
    assert paths["/cache/{key}"]["put"]["requestBody"]["required"] is True


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    """/docs serves the interactive API page, which reads /openapi.json."""
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text
