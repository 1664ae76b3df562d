"""Drive a server with wrk and read back what it measured.

Load comes from wrk, a C program, rather than from Python: a Python load
generator would take the very CPU whose use is being measured. wrk runs
``wrk_report.lua``, which counts answers per status code in each thread and
prints one ``BENCH_JSON {...}`` line from its ``done()`` hook, so nothing here
scrapes wrk's human-readable text.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_report.lua")
MARKER = "BENCH_JSON "
INSTALL_HINT = "install it with `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk`"


class BenchError(RuntimeError):
    """The benchmark cannot run as asked: a tool is missing or a run failed."""


@dataclass(frozen=True)
class Load:
    """How hard and how long wrk drives one route."""

    connections: int = 64
    duration: float = 5.0
    #: Seconds of unmeasured load first, so that pools, caches and the
    #: workers' connection spread have settled.
    warmup: float = 1.0
    threads: int = 2
    #: Seconds before wrk counts a request as timed out. Generous, because
    #: 1,000 connections on 2 cores queue for a while, and a queued request
    #: is slow, not lost.
    timeout: float = 10.0


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    #: Answers per HTTP status code, e.g. ``{"200": 20511}``.
    statuses: dict[str, int] = field(default_factory=dict)
    #: Requests that got no answer at all: connect, read, write, timeout.
    socket_errors: dict[str, int] = field(default_factory=dict)
    #: CPU milliseconds the server's processes spent per request, if known.
    cpu_ms_per_request: float | None = None
    #: Failed requests during the warm-up: not measured, but failures all the same.
    warmup_failed: int = 0

    @property
    def non_2xx(self) -> int:
        """Answers whose status was not 2xx."""
        return sum(n for code, n in self.statuses.items() if not code.startswith("2"))

    @property
    def failed(self) -> int:
        """Requests that failed in any way, warm-up included: non-2xx or socket error."""
        return self.non_2xx + sum(self.socket_errors.values()) + self.warmup_failed


def wrk_binary() -> str:
    """Path of wrk, or :class:`BenchError` saying how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise BenchError(f"wrk not found on PATH; {INSTALL_HINT}")
    return found


def wrk_version() -> str:
    """wrk's version line, e.g. ``wrk debian/4.1.0-3 [epoll]``."""
    # wrk prints its version in the usage text and exits 1.
    proc = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, check=False)
    first = (proc.stdout or proc.stderr).splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "wrk (unknown version)"


def parse(output: str) -> WrkResult:
    """Read the ``BENCH_JSON`` line that ``wrk_report.lua`` prints."""
    for line in output.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            break
    else:
        raise BenchError(f"wrk printed no {MARKER.strip()} line:\n{output[-2000:]}")
    seconds = raw["duration_us"] / 1e6
    latency = raw["latency_us"]
    return WrkResult(
        requests=raw["requests"],
        seconds=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        mean_ms=round(latency["mean"] / 1000, 3),
        # Lua's empty table prints as {} whichever shape was meant.
        statuses=dict(sorted(raw["statuses"].items())) if raw["statuses"] else {},
        socket_errors={k: v for k, v in raw["errors"].items() if k != "status"},
    )


def _argv(
    url: str,
    load: Load,
    seconds: float,
    method: str,
    body: str | None,
    headers: Mapping[str, str],
) -> list[str]:
    argv = [
        wrk_binary(),
        "--threads", str(min(load.threads, load.connections)),
        "--connections", str(load.connections),
        "--duration", f"{max(1, round(seconds))}s",
        "--timeout", f"{load.timeout:g}s",
        "--script", str(SCRIPT),
    ]  # fmt: skip
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    argv += [url, "--", method]
    if body is not None:
        argv.append(body)
    return argv


def run_wrk(
    url: str,
    load: Load,
    *,
    method: str = "GET",
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
    cpu_seconds: Callable[[], float | None] | None = None,
) -> WrkResult:
    """Warm up, then drive ``url`` for ``load.duration`` seconds and return the result.

    ``cpu_seconds``, if given, reads the server's CPU time so far; read just
    before and after the measured run, it gives the CPU spent per request.
    """
    headers = dict(headers or {})
    warmup_failed = 0
    if load.warmup > 0:
        warmup = parse(_call(_argv(url, load, load.warmup, method, body, headers), load))
        warmup_failed = warmup.failed
    before = cpu_seconds() if cpu_seconds else None
    result = parse(_call(_argv(url, load, load.duration, method, body, headers), load))
    after = cpu_seconds() if cpu_seconds else None
    per_request = None
    if before is not None and after is not None and result.requests:
        per_request = round(1000 * (after - before) / result.requests, 3)
    return dataclasses.replace(result, cpu_ms_per_request=per_request, warmup_failed=warmup_failed)


def _call(argv: list[str], load: Load) -> str:
    # subprocess.run kills wrk if we are interrupted (Ctrl-C) while it runs.
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=load.duration + load.warmup + load.timeout + 30,
    )
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc.stdout
