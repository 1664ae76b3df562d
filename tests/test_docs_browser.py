"""``/docs`` in headless Chromium with every request off this server cut: it still renders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from qapp.testing import HypercornServer
from tests.test_page_browser import CHROMIUM, LAUNCH_ARGS

if TYPE_CHECKING:
    from playwright.sync_api import Route

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """qapp under hypercorn, one worker: the page's assets all come from it."""
    instance: Path = tmp_path_factory.mktemp("docs-instance")
    env = {"QAPP_INSTANCE_PATH": str(instance), "QAPP_STORE_URL": f"sqlite://{instance}/qapp.db"}
    with HypercornServer(workers=1, env=env) as running:
        yield running


def test_docs_render_the_operations_with_no_network(server: HypercornServer) -> None:
    """With the network cut, /docs lists every operation, and nothing else was asked for."""
    from playwright.sync_api import sync_playwright

    elsewhere: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{server.url}/docs")
            page.wait_for_selector(".opblock", timeout=20_000)
            operations = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()
    assert operations >= 15  # health, the counters, sessions, cache, memo, auth, the page
    assert "qapp" in title
    assert elsewhere == []
    assert not [e for e in errors if "Content Security Policy" in e], errors
