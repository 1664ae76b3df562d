"""``GET /`` serves the race lab page and its files, on every backend."""

from __future__ import annotations

import httpx


async def test_index_is_html(client: httpx.AsyncClient) -> None:
    """``GET /`` answers the page as UTF-8 HTML that loads its own script and style."""
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    assert html.startswith("<!doctype html>")
    assert '<script src="/static/page.js" defer></script>' in html
    assert '<link rel="stylesheet" href="/static/page.css">' in html
    assert 'id="race-form"' in html
    assert 'id="auth-form"' in html


async def test_index_runs_only_its_own_code(client: httpx.AsyncClient) -> None:
    """The page's policy forbids inline and foreign scripts, framing and sniffing."""
    response = await client.get("/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in response.text
    assert " style=" not in response.text


async def test_page_files_are_served_with_their_types(client: httpx.AsyncClient) -> None:
    """The script and the style sheet the page names are served with their types."""
    script = await client.get("/static/page.js")
    style = await client.get("/static/page.css")
    assert script.status_code == 200
    assert script.headers["content-type"].split(";")[0] in {
        "text/javascript",
        "application/javascript",
    }
    assert "/counter/" in script.text
    assert style.status_code == 200
    assert style.headers["content-type"].split(";")[0] == "text/css"


async def test_index_rejects_other_methods_as_json(client: httpx.AsyncClient) -> None:
    """POST to the page is a JSON 405, like every other wrong method."""
    response = await client.post("/")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


async def test_unknown_page_file_is_json_404(client: httpx.AsyncClient) -> None:
    """A static file that does not exist is the usual JSON 404."""
    response = await client.get("/static/no-such-file.js")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_overlong_static_file_name_is_a_json_404(client: httpx.AsyncClient) -> None:
    """A static file name longer than the file system allows is a JSON 404, not a 500."""
    for name in ["a" * 300, "a/" + "b" * 5000 + ".js"]:
        response = await client.get(f"/static/{name}")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    assert (await client.get("/static/page.js")).status_code == 200
