"""``/metrics``: Prometheus counts summed over every worker, served only to whom may read them."""

from __future__ import annotations

import asyncio
import os
import random
import string
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart

from qapp import create_app
from qapp.testing import HypercornServer
from tests.appclients import CLIENT_KINDS, sender
from tests.conftest import NO_LIMITS_ENV
from tests.loadgen import http, send

#: Increments sent to the 4-worker server, by this many clients at once.
REQUESTS = 2000
CLIENTS = 50
COUNTER_RULE = "/counter/<name>"
#: Invented methods and paths sent by each flood.
FLOOD = 200


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


def test_importing_the_store_layer_loads_neither_quart_nor_prometheus() -> None:
    """Importing qapp.state, qapp.store.metrics and a backend loads neither Quart nor prometheus."""
    code = (
        "import sys, qapp.state, qapp.store.metrics, qapp.store.backends.base; "
        "print(sorted(m for m in ('quart', 'prometheus_client') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def metered_app(tmp_path: Path, **settings: str) -> Quart:
    """The service with metrics on, on a SQLite file of its own."""
    return create_app(
        {
            "STORE_URL": f"sqlite://{tmp_path / 'qapp.db'}",
            "INSTANCE_PATH": str(tmp_path),
            "QAPP_METRICS": "1",
            **settings,
        }
    )


@pytest.fixture
async def client_of(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the service with metrics on."""
    app = metered_app(tmp_path)
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            yield c


async def test_metrics_count_requests_by_route_status_and_store_calls(
    client_of: httpx.AsyncClient,
) -> None:
    """Three increments and a 404 show up as counts by URL rule and status, with store calls."""
    before = samples((await client_of.get("/metrics")).text)
    for _ in range(3):
        assert (await client_of.post("/counter/atomic")).status_code == 200
    assert (await client_of.get("/no/such/page")).status_code == 404
    scrape = await client_of.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    after = samples(scrape.text)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    labels = {"route": COUNTER_RULE, "method": "POST"}
    assert grew("qapp_http_requests_total", status="200", **labels) == 3
    assert grew("qapp_http_request_duration_seconds_count", **labels) == 3
    assert grew("qapp_http_requests_total", route="(unmatched)", status="404") == 1
    assert grew("qapp_store_operation_duration_seconds_count", backend="sqlite", op="incr") == 3
    assert grew("qapp_incr_batch_size_sum") == 3


async def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    """Without QAPP_METRICS there is no /metrics route at all."""
    app = create_app({"STORE_URL": "memory://", "INSTANCE_PATH": str(tmp_path)})
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            assert (await c.get("/metrics")).status_code == 404


async def test_a_token_guards_metrics_when_set(tmp_path: Path) -> None:
    """With QAPP_METRICS_TOKEN, no or a wrong bearer token is a 401, the right one a 200."""
    app = metered_app(tmp_path, QAPP_METRICS_TOKEN="s3cret-token")
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            bare = await c.get("/metrics")
            wrong = await c.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await c.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert (bare.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert bare.json()["error"] == "unauthorized"
    assert "qapp_http_requests_total" in right.text


async def test_without_a_token_only_the_loopback_address_may_read(tmp_path: Path) -> None:
    """Through a trusted proxy, a forwarded public client gets 403 and a loopback one 200."""
    app = metered_app(tmp_path, QAPP_TRUSTED_PROXIES="127.0.0.1")
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://qapp.test") as c:
            public = await c.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
            local = await c.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert (public.status_code, local.status_code) == (403, 200)
    assert public.json()["error"] == "forbidden"


async def settled(
    url: str, before: dict[tuple[str, frozenset[tuple[str, str]]], float]
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A scrape once every worker has written out its counts (each does once a second)."""
    labels = {"route": COUNTER_RULE, "method": "POST"}
    for _ in range(50):
        found = samples((await asyncio.to_thread(httpx.get, f"{url}/metrics")).text)
        counted = total(found, "qapp_http_requests_total", **labels)
        if counted - total(before, "qapp_http_requests_total", **labels) >= REQUESTS:
            return found
        await asyncio.sleep(0.2)
    return found


def multiproc_dir(pid: int) -> str | None:
    """PROMETHEUS_MULTIPROC_DIR in the environment of process ``pid``."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name == b"PROMETHEUS_MULTIPROC_DIR":
            return value.decode()
    return None


@pytest.mark.slow
@pytest.mark.parametrize("server_kind", ["hypercorn", "granian"])
async def test_counts_from_four_workers_add_up_to_the_requests_sent(
    tmp_path: Path, server_kind: str
) -> None:
    """2,000 increments over 4 workers, scraped under load: every count adds up to exactly 2,000
    within a second or two of the last answer."""
    env = {
        "QAPP_STORE_URL": f"sqlite://{tmp_path / 'qapp.db'}",
        "QAPP_INSTANCE_PATH": str(tmp_path),
        "QAPP_METRICS": "1",
        **NO_LIMITS_ENV,
    }
    with HypercornServer(workers=4, env=env, server=server_kind) as server:
        assert server.proc is not None
        directory = multiproc_dir(server.worker_pid() or 0)
        assert directory is not None
        assert await asyncio.to_thread(os.path.isdir, directory)
        before = samples((await asyncio.to_thread(httpx.get, f"{server.url}/metrics")).text)
        async with http(server.url, CLIENTS) as client:
            queue = iter(range(REQUESTS))

            async def sender() -> list[int]:
                got = []
                for _ in queue:
                    answer = await send(client, "POST", "/counter/atomic")
                    assert answer.status == 200, answer
                    got.append(answer.body["worker"])
                return got

            load = asyncio.gather(*(sender() for _ in range(CLIENTS)))
            # Scrapes while the load runs: each is a whole, valid answer.
            during = []
            for _ in range(5):
                await asyncio.sleep(0.2)
                during.append(await send(client, "GET", "/metrics"))
            workers = {pid for got in await load for pid in got}
        after = await settled(server.url, before)
    # The serving parent removes the directory it made.
    assert not await asyncio.to_thread(os.path.exists, directory)
    assert len(workers) == 4
    assert [a.status for a in during] == [200] * 5
    for answer in during:
        assert "qapp_http_requests_total" in answer.body

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    labels = {"route": COUNTER_RULE, "method": "POST"}
    assert grew("qapp_http_requests_total", status="200", **labels) == REQUESTS
    assert grew("qapp_http_requests_total", **labels) == REQUESTS
    assert grew("qapp_http_request_duration_seconds_count", **labels) == REQUESTS
    incr = {"backend": "sqlite", "op": "incr", "outcome": "ok"}
    assert grew("qapp_store_operation_duration_seconds_count", **incr) == REQUESTS
    # Every increment went out in exactly one coalesced store call.
    assert grew("qapp_incr_batch_size_sum") == REQUESTS
    assert 0 < grew("qapp_incr_batch_size_count") <= REQUESTS
    assert grew("qapp_http_requests_total", route="/metrics", status="200") >= 6


def invented(rng: random.Random, length: int = 200) -> str:
    """A method or path segment nobody uses: ``length`` random capital letters."""
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(length))


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_labels_are_bounded_methods_and_url_rules(tmp_path: Path, kind: str) -> None:
    """An invented method counts as "other" and a path without a route as "(unmatched)"."""
    app = metered_app(tmp_path)
    async with app.test_app():
        send = sender(app, kind)
        before = samples((await send("GET", "/metrics")).text)
        rng = random.Random(1)
        methods = [invented(rng, 40) for _ in range(5)]
        for method in methods:
            assert (await send(method, "/counter/atomic")).status == 405
            assert (await send(method, f"/{invented(rng, 40)}")).status == 404
        assert (await send("PATCH", "/counter/atomic")).status == 405
        after = samples((await send("GET", "/metrics")).text)
    labels = {label for (_, pairs) in after for label in pairs}
    assert not any(method in value for method in methods for _, value in labels)
    grown = total(after, "qapp_http_requests_total", method="other", route="(unmatched)")
    assert (
        grown - total(before, "qapp_http_requests_total", method="other", route="(unmatched)") == 10
    )
    assert (
        total(after, "qapp_http_requests_total", method="PATCH", status="405")
        - total(before, "qapp_http_requests_total", method="PATCH", status="405")
        == 1
    )


def http_series(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    """The distinct label sets of the per-request metrics in a scrape, each as text."""
    return {
        f"{name}{sorted(labels)}" for name, labels in found if name.startswith("qapp_http_request")
    }


async def scrape_when(
    url: str, ready: dict[tuple[str, str, str], float]
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A scrape once ``qapp_http_requests_total`` by (route, method, status) has at least these.

    Each worker writes out its counts once a second, so a scrape may lag that long.
    """
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for _ in range(100):
        found = samples((await asyncio.to_thread(httpx.get, f"{url}/metrics")).text)
        counts = {
            labels: total(
                found,
                "qapp_http_requests_total",
                route=labels[0],
                method=labels[1],
                status=labels[2],
            )
            for labels in ready
        }
        if all(counts[labels] >= count for labels, count in ready.items()):
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"counts never reached {ready}: {counts}")


@pytest.mark.slow
@pytest.mark.parametrize("server_kind", ["hypercorn", "granian"])
async def test_a_flood_of_invented_methods_and_paths_adds_no_series(
    tmp_path: Path, server_kind: str
) -> None:
    """200 invented methods and 200 invented paths on 2 real workers leave the number of series
    in the scrape as it was: methods count as "other", paths without a route as "(unmatched)"."""
    env = {
        "QAPP_STORE_URL": f"sqlite://{tmp_path / 'qapp.db'}",
        "QAPP_INSTANCE_PATH": str(tmp_path),
        "QAPP_METRICS": "1",
        **NO_LIMITS_ENV,
    }
    rng = random.Random(7)

    def kinds() -> list[tuple[str, str]]:
        """One request of each kind the flood sends."""
        return [
            (invented(rng), f"/{invented(rng)}"),  # an invented method on an invented path
            (invented(rng), "/counter/atomic"),  # an invented method on a route
            ("GET", f"/{invented(rng)}"),  # an invented path
        ]

    with HypercornServer(workers=2, env=env, server=server_kind) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:

            async def send_all(requests: list[tuple[str, str]]) -> set[int]:
                return {(await client.request(m, p)).status_code for m, p in requests}

            # One of each kind first, so that the bounded series exist before the flood.
            assert await send_all(kinds()) == {404, 405}
            expected = {
                ("(unmatched)", "other", "404"): 1.0,
                ("(unmatched)", "other", "405"): 1.0,
                ("(unmatched)", "GET", "404"): 1.0,
            }
            assert (await client.get("/metrics")).status_code == 200
            before = await scrape_when(server.url, {**expected, ("/metrics", "GET", "200"): 1.0})
            flood = [request for _ in range(FLOOD) for request in kinds()]
            assert await send_all(flood) == {404, 405}
            after = await scrape_when(server.url, dict.fromkeys(expected, 1.0 + FLOOD))
    for (route, method, status), count in expected.items():
        labels = {"route": route, "method": method, "status": status}
        assert total(after, "qapp_http_requests_total", **labels) == count + FLOOD
    assert len(after) == len(before)
    assert set(after) == set(before)
    assert http_series(after) == http_series(before)
