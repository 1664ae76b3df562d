"""The race lab page in a real browser: Debian's Chromium, headless, driven by
Playwright, against real hypercorn workers on SQLite.

One server (4 workers) serves the whole module and one browser runs all of it;
each test gets its own isolated browser context, so cookies never leak
between tests. The numbers are read from the page's DOM, as a person would read
them off the screen.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from qapp.testing import HypercornServer, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

#: Debian's chromium package; never a browser build that Playwright downloads.
CHROMIUM = os.environ.get("QAPP_CHROMIUM", "/usr/bin/chromium")

#: Headless, and nothing that would reach for the network on its own.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: The screenshot the README embeds. Every run takes it; it replaces the committed
#: one only when asked, so a test run leaves the work tree clean:
#: ``QAPP_UPDATE_SCREENSHOT=1 pytest tests/test_page_browser.py``.
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "race-panel.png"

#: Bound on one whole run of 300 requests (ms).
RUN_TIMEOUT = 30_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """qapp under hypercorn with 4 workers sharing one SQLite file."""
    instance = tmp_path_factory.mktemp("browser-instance")
    env = {"QAPP_INSTANCE_PATH": str(instance), "QAPP_STORE_URL": f"sqlite://{instance}/qapp.db"}
    with HypercornServer(workers=4, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for every test in the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield launched
        launched.close()


def open_page(browser: Browser, url: str, width: int = 1280) -> Page:
    """A fresh, isolated browser context (its own cookies) showing the page at ``url``."""
    context = browser.new_context(
        base_url=url, viewport={"width": width, "height": 900}, device_scale_factor=1
    )
    context.set_default_timeout(RUN_TIMEOUT)
    page = context.new_page()
    page.goto("/")
    return page


@pytest.fixture
def page(browser: Browser, server: HypercornServer) -> Iterator[Page]:
    """The page in a context of its own, closed after the test."""
    opened = open_page(browser, server.url)
    yield opened
    opened.context.close()


def reset(page: Page, strategy: str) -> None:
    """Press Reset for ``strategy`` and wait until the page says it is done."""
    page.select_option("#strategy", strategy)
    page.click("#race-reset")
    page.wait_for_selector("#race-message[data-kind='ok']:has-text('Reset')")


def fire(page: Page, strategy: str, requests: int) -> dict[str, int]:
    """Fire ``requests`` at ``strategy`` and return the summary's figures."""
    page.select_option("#strategy", strategy)
    page.fill("#count", str(requests))
    page.click("#fire")
    page.wait_for_selector(f"#race-summary[data-state='done'][data-strategy='{strategy}']")
    data = page.eval_on_selector("#race-summary", "el => ({...el.dataset})")
    return {key: int(value) for key, value in data.items() if key not in {"state", "strategy"}}


def test_atomic_hands_out_every_number_once(page: Page) -> None:
    """Firing atomic ×200 from the keyboard shows 200 distinct numbers, 0 lost, 0 repeated."""
    reset(page, "atomic")
    page.fill("#count", "200")
    page.focus("#count")
    page.keyboard.press("Enter")  # submitting the form is Fire
    page.wait_for_selector("#race-summary[data-state='done']")
    data = page.eval_on_selector("#race-summary", "el => ({...el.dataset})")
    assert data["sent"] == "200"
    assert data["failed"] == "0"
    assert data["distinct"] == "200"
    assert data["lost"] == "0"
    assert data["repeated"] == "0"
    cells = page.locator("#race-grid li").all_inner_texts()
    assert cells == [str(n) for n in range(1, 201)]
    assert page.locator("#race-grid li.repeated, #race-grid li.missing").count() == 0
    summary = page.inner_text("#race-summary")
    assert "lost 0" in summary
    assert "repeated 0" in summary


def reset_every_worker(server: HypercornServer, strategy: str) -> None:
    """Reset ``strategy``'s counter in every worker, so that all of them start at 0.

    A per-worker counter is reset only in the worker that answers the DELETE;
    each request here comes on a fresh connection, until every worker has answered.
    """
    seen: set[int] = set()
    for _ in range(50 * server.workers):
        request = urllib.request.Request(f"{server.url}/counter/{strategy}", method="DELETE")
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.load(response)
        assert answer["value"] == 0
        seen.add(answer["worker"])
        if len(seen) == server.workers:
            return
    raise AssertionError(f"only workers {sorted(seen)} answered the reset")


def fire_across_workers(
    browser: Browser, server: HypercornServer, strategy: str, requests: int
) -> tuple[Page, dict[str, int]]:
    """Fire from a fresh page, with every worker's counter at 0, until ≥ 2 workers answered.

    The browser, not the test, chooses its connections (at most 6 to a host),
    and now and then the worker that accepted them all answers the whole run.
    Such a run cannot show what happens between workers, so it is fired again
    from a new context, a bounded number of times. The caller closes the page.
    """
    for _ in range(4):
        reset_every_worker(server, strategy)
        page = open_page(browser, server.url)
        figures = fire(page, strategy, requests)
        if figures["workers"] >= 2:
            return page, figures
        page.context.close()
    raise AssertionError("4 runs in a row reached one worker only")


def test_unsafe_loses_updates(browser: Browser, server: HypercornServer) -> None:
    """Firing unsafe ×300 on 4 workers shows lost updates, listed and drawn."""
    page, figures = fire_across_workers(browser, server, "unsafe", 300)
    try:
        assert figures["failed"] == 0
        assert figures["lost"] > 0
        assert figures["repeated"] > 0
        assert f"lost {figures['lost']}" in page.inner_text("#race-summary")
        # The numbers the counters skipped are drawn dashed and listed, alike.
        dashed = page.locator("#race-grid li.missing").count()
        assert page.inner_text("#race-missing").startswith(f"Never handed out ({dashed}):")
    finally:
        page.context.close()


def test_locked_repeats_numbers_across_workers(
    browser: Browser, server: HypercornServer, tmp_path: Path
) -> None:
    """Firing locked ×300 on 4 workers shows repeated numbers and no loss, a colour per worker."""
    page, figures = fire_across_workers(browser, server, "locked", 300)
    try:
        assert figures["failed"] == 0
        assert figures["repeated"] > 0
        # Each worker's own count is exact: nothing lost, nothing skipped.
        assert figures["lost"] == 0
        assert page.locator("#race-grid li.missing").count() == 0
        # Every copy of a repeated number is marked: more cells than extra copies.
        assert page.locator("#race-grid li.repeated").count() > figures["repeated"]
        # Each worker that answered has a colour of its own and a line in the legend.
        workers = set(
            page.eval_on_selector_all(
                "#race-grid li[data-worker]", "els => els.map(e => e.dataset.worker)"
            )
        )
        assert len(workers) == figures["workers"]
        legend = page.inner_text("#race-legend")
        for pid in workers:
            assert f"worker {pid}" in legend
        shot = (
            DOCS_SCREENSHOT if os.environ.get("QAPP_UPDATE_SCREENSHOT") else tmp_path / "race.png"
        )
        page.locator("#race").screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        page.context.close()


def test_two_browsers_keep_separate_sessions(browser: Browser, server: HypercornServer) -> None:
    """Two isolated contexts keep separate session counters; login in one is not in the other."""
    first = open_page(browser, server.url)
    second = open_page(browser, server.url)
    try:
        for page in (first, second):
            page.wait_for_selector("#session-counter[data-value='0']")
            page.wait_for_selector("#whoami:has-text('Not logged in')")
        for _ in range(3):
            expected = int(first.inner_text("#session-counter")) + 1
            first.click("#session-inc")
            first.wait_for_selector(f"#session-counter[data-value='{expected}']")
        second.click("#session-dec")
        second.wait_for_selector("#session-counter[data-value='-1']")

        name = f"alice_{secrets.token_hex(4)}"
        first.fill("#username", name)
        first.fill("#password", "correct horse battery")
        first.click("#register")
        first.wait_for_selector("#session-message[data-kind='ok']:has-text('Registered')")
        first.click("#login")
        first.wait_for_selector(f"#whoami[data-username='{name}']")

        # After a reload each page still shows its own state, from the server.
        first.reload()
        second.reload()
        first.wait_for_selector(f"#whoami[data-username='{name}']")
        second.wait_for_selector("#whoami:has-text('Not logged in')")
        assert second.get_attribute("#whoami", "data-username") == ""
        second.wait_for_selector("#session-counter[data-value='-1']")

        first.click("#logout")
        first.wait_for_selector("#whoami:has-text('Not logged in')")
    finally:
        first.context.close()
        second.context.close()


def test_session_counter_from_the_keyboard(page: Page) -> None:
    """Inc and Reset work from the keyboard, and the focused control is outlined."""
    page.wait_for_selector("#session-counter[data-value='0']")
    page.focus("#session-inc")
    outline = page.eval_on_selector("#session-inc", "el => getComputedStyle(el).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Enter")
    page.wait_for_selector("#session-counter[data-value='1']")
    page.keyboard.press("Space")
    page.wait_for_selector("#session-counter[data-value='2']")
    page.focus("#session-reset")
    page.keyboard.press("Enter")
    page.wait_for_selector("#session-counter[data-value='0']")


def test_wrong_password_is_shown_in_words(page: Page) -> None:
    """A 401 from /auth/login is put into words in the session panel's live region."""
    page.fill("#username", f"nobody_{secrets.token_hex(4)}")
    page.fill("#password", "not the password")
    page.click("#login")
    message = page.locator("#session-message[data-kind='error']")
    message.wait_for()
    text = message.inner_text()
    assert text.startswith("POST /auth/login failed: 401 Unauthorized:")
    assert page.get_attribute("#session-message", "aria-live") == "polite"
    assert page.get_attribute("#whoami", "data-username") == ""


def test_store_down_is_shown_in_words(browser: Browser, tmp_path: Path) -> None:
    """With the store on a closed Redis port, the page says 503 in words, not silence."""
    env = {
        "QAPP_INSTANCE_PATH": str(tmp_path / "instance"),
        "QAPP_STORE_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    with HypercornServer(workers=1, env=env) as down:
        page = open_page(browser, down.url)
        try:
            figures = fire(page, "atomic", 5)
            assert figures["failed"] == 5
            assert figures["distinct"] == 0
            message = page.inner_text("#race-message")
            assert message.startswith("5 of 5 requests failed. 503 Service Unavailable ×5:")
            assert "Try again in 1 s." in message
            page.click("#session-inc")
            session_message = page.locator("#session-message[data-kind='error']")
            session_message.wait_for()
            assert session_message.inner_text().startswith(
                "POST /session/counter/inc failed: 503 Service Unavailable:"
            )
            assert page.inner_text("#race-store").startswith("The store may be down:")
        finally:
            page.context.close()


def test_page_fits_a_narrow_screen(browser: Browser, server: HypercornServer) -> None:
    """On a 360 px wide screen the panels stack and nothing scrolls sideways."""
    page = open_page(browser, server.url, width=360)
    try:
        fire(page, "atomic", 100)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        race = page.locator("#race").bounding_box()
        session = page.locator("#session").bounding_box()
        assert race is not None
        assert session is not None
        assert session["y"] >= race["y"] + race["height"]
        assert re.search(r"workers \d+", page.inner_text("#race-summary"))
    finally:
        page.context.close()


def test_controls_are_labelled_and_checked(page: Page) -> None:
    """Every control has a label or text, and an out-of-range count is refused in words."""
    unlabelled = page.eval_on_selector_all(
        "input, select", "els => els.filter(e => e.labels.length === 0).map(e => e.id)"
    )
    assert unlabelled == []
    nameless = page.eval_on_selector_all(
        "button", "els => els.filter(e => !e.textContent.trim()).map(e => e.id)"
    )
    assert nameless == []
    page.fill("#count", "501")
    page.click("#fire")
    page.wait_for_selector("#race-message[data-kind='error']")
    assert page.inner_text("#race-message") == "Requests must be a whole number from 1 to 500."
    assert page.get_attribute("#count", "aria-invalid") == "true"
    assert page.get_attribute("#race-summary", "data-state") == "idle"


def fire_lab(page: Page, race: str, requests: int) -> dict[str, str]:
    """Fire ``requests`` at the lab panel's ``race`` (``row/strategy``); return its figures."""
    row, strategy = race.split("/")
    page.select_option("#lab-row", race)
    page.fill("#lab-count", str(requests))
    page.click("#lab-fire")
    page.wait_for_selector(
        f"#lab-summary[data-state='done'][data-row='{row}'][data-strategy='{strategy}']"
    )
    data: dict[str, str] = page.eval_on_selector("#lab-summary", "el => ({...el.dataset})")
    return data


def test_lab_session_dict_loses_and_session_incr_does_not(page: Page) -> None:
    """From one browser, the session dict loses increments and session.incr moves by exactly 100."""
    naive = fire_lab(page, "sessions/naive", 100)
    assert (naive["sent"], naive["failed"]) == ("100", "0")
    assert int(naive["counted"]) < 100
    assert int(naive["wrong"]) == 100 - int(naive["counted"])
    assert f"lost {naive['wrong']}" in page.inner_text("#lab-summary")
    atomic = fire_lab(page, "sessions/atomic", 100)
    assert (atomic["sent"], atomic["failed"], atomic["counted"], atomic["wrong"]) == (
        "100",
        "0",
        "100",
        "0",
    )
    assert "moved 100 · lost 0" in page.inner_text("#lab-summary")


def test_lab_cache_aside_recomputes_and_cached_computes_once(page: Page) -> None:
    """Cold reads from one browser: cache-aside computes several times, cached exactly once."""
    naive = fire_lab(page, "stampede/naive", 60)
    assert naive["failed"] == "0"
    assert int(naive["counted"]) > 1
    assert int(naive["wrong"]) == int(naive["counted"]) - 1
    cached = fire_lab(page, "stampede/cached", 60)
    assert (cached["failed"], cached["counted"], cached["wrong"]) == ("0", "1", "0")
    assert "computed 1 · recomputed 0" in page.inner_text("#lab-summary")
    assert page.get_attribute("#lab-message", "data-kind") == "ok"
