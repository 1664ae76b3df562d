"""Where a qapp worker spends its time on one route: a short cProfile under wrk's load.

``python -m bench.hotspots --route cache-get`` starts a redis-server and
one qapp worker on granian (or ``--server hypercorn``) serving
:mod:`bench.profiled`, makes the route ready as the bench does, drives it
with wrk for a few seconds, and prints the functions with the most own
time. The bench calls :func:`profile_route` for each route whose fast-path
target it missed. cProfile slows the worker several times over, so the
shares matter, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import pstats
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.peers.server import ROOT, PeerServer
from bench.routes import ROUTES, prepare
from bench.wrk import Load, run_wrk
from qapp.testing import RedisServer


class ProfiledServer(PeerServer):
    """qapp's service wrapped by :mod:`bench.profiled`, under ``qapp serve``."""

    def __init__(self, *, redis_url: str, server: str, folder: Path) -> None:
        super().__init__(app="bench.profiled:app", redis_url=redis_url, workers=1)
        self.name = server
        self.env.update(
            QAPP_STORE_URL=redis_url,
            QAPP_INSTANCE_PATH=str(folder / "instance"),
            BENCH_PROFILE_DIR=str(folder),
        )

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "qapp.tools.cli", "serve",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", "1",
            "--app", self.app,
            "--server", self.name,
        ]  # fmt: skip


@dataclass(frozen=True)
class Hotspot:
    """One function and its share of the worker's own (self) time."""

    function: str
    share: float
    calls: int


def _short(file: str) -> str:
    # The path from site-packages, the standard library or the repository.
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    if "/lib/python3" in file:
        return file.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return file


def _where(file: str, line: int, name: str) -> str:
    return f"{_short(file)}:{line}({name})" if line else name


def _package(file: str, name: str) -> str:
    """The top-level package a function belongs to; C functions by their type's module."""
    if file == "~":
        # e.g. "<method 'send' of 'granian._granian.ASGIHTTPProtocol' objects>"; a
        # built-in type's has no module: "<method 'join' of 'str' objects>".
        owner = name.split(" of '", 1)[1].split("'", 1)[0] if " of '" in name else ""
        return f"{owner.split('.', 1)[0] if '.' in owner else 'builtins'} (C)"
    short = _short(file)
    return short.split("/", 1)[0].removesuffix(".py")


def by_package(stats_path: Path, count: int = 6) -> list[Hotspot]:
    """Own time summed per top-level package (quart, asyncio, qapp, ...), largest first."""
    entries = pstats.Stats(str(stats_path)).stats  # type: ignore[attr-defined]
    total = sum(value[2] for value in entries.values()) or 1.0
    sums: dict[str, list[float]] = {}
    for (file, _, name), value in entries.items():
        cell = sums.setdefault(_package(file, name), [0.0, 0])
        cell[0] += value[2]
        cell[1] += value[1]
    ranked = sorted(sums.items(), key=lambda item: item[1][0], reverse=True)[:count]
    return [Hotspot(pkg, round(100 * t / total, 1), int(n)) for pkg, (t, n) in ranked]


def top(
    stats_path: Path, count: int = 8, *, cumulative: bool = False, package: str | None = None
) -> list[Hotspot]:
    """The ``count`` functions with the most own time in a cProfile dump.

    With ``cumulative``, the most cumulative time instead (their own and their
    callees'), still as a share of the whole profile's time; with ``package``,
    only that package's functions (as :func:`by_package` names it: ``quart``).
    """
    stats = pstats.Stats(str(stats_path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(value[2] for value in entries.values()) or 1.0
    column = 3 if cumulative else 2
    if package is not None:
        entries = {func: v for func, v in entries.items() if _package(func[0], func[2]) == package}
    ranked = sorted(entries.items(), key=lambda item: item[1][column], reverse=True)[:count]
    return [
        Hotspot(_where(*func), round(100 * value[column] / total, 1), int(value[1]))
        for func, value in ranked
    ]


@dataclass(frozen=True)
class Profile:
    """A profiled worker's own time: by package (every one, largest first), and its top
    functions."""

    packages: list[Hotspot]
    functions: list[Hotspot]


def profile_route(
    route: str, *, server: str = "granian", connections: int = 64, seconds: float = 3.0
) -> Profile:
    """Profile one qapp worker on ``server`` under ``seconds`` of ``route`` (Redis store)."""
    with (
        tempfile.TemporaryDirectory(prefix="qapp-hotspots-") as tmp,
        RedisServer() as redis,
        ProfiledServer(redis_url=redis.url, server=server, folder=Path(tmp)) as qapp,
    ):
        target = ROUTES[route]
        headers, why = prepare(qapp.url, target)
        if why is not None:
            raise RuntimeError(why)
        warm = Load(connections=connections, duration=1, warmup=0, threads=2)
        run_wrk(qapp.url + target.path, warm, method=target.method, headers=headers)
        urllib.request.urlopen(qapp.url + "/_bench/profile/start", timeout=30).close()
        load = Load(connections=connections, duration=seconds, warmup=0, threads=2)
        run_wrk(qapp.url + target.path, load, method=target.method, headers=headers)
        with urllib.request.urlopen(qapp.url + "/_bench/profile", timeout=30) as answer:
            dump = Path(json.load(answer)["path"])
        return Profile(by_package(dump, count=100), top(dump))


def summary(profile: Profile, functions: int = 4) -> str:
    """One line: own time by package, then the top functions."""
    packages = ", ".join(f"{s.function} {s.share:g} %" for s in profile.packages[:6])
    top = ", ".join(f"{s.function} {s.share:g} %" for s in profile.functions[:functions])
    return f"by package: {packages}; top functions: {top}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hotspots", description=__doc__)
    p.add_argument("--route", choices=sorted(ROUTES), default="cache-get")
    p.add_argument("--server", choices=("granian", "hypercorn"), default="granian")
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument("-d", "--duration", type=float, default=3.0)
    p.add_argument("-n", "--count", type=int, default=6, help="functions to show")
    args = p.parse_args(argv)
    profile = profile_route(
        args.route, server=args.server, connections=args.connections, seconds=args.duration
    )
    print("own time by package:")
    for s in profile.packages[: args.count]:
        print(f"{s.share:5.1f} %  {s.calls:>9} calls  {s.function}")
    print("functions with the most own time:")
    for s in profile.functions[: args.count]:
        print(f"{s.share:5.1f} %  {s.calls:>9} calls  {s.function}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
