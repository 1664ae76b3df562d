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


def _where(file: str, line: int, name: str) -> str:
    # Short and recognisable: the package path from site-packages or the repo.
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{file}:{line}({name})" if line else name


def top(stats_path: Path, count: int = 6) -> list[Hotspot]:
    """The ``count`` functions with the most own time in a cProfile dump."""
    stats = pstats.Stats(str(stats_path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(value[2] for value in entries.values()) or 1.0
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:count]
    return [
        Hotspot(_where(*func), round(100 * value[2] / total, 1), int(value[1]))
        for func, value in ranked
    ]


def profile_route(
    route: str, *, server: str = "granian", connections: int = 64, seconds: float = 3.0
) -> list[Hotspot]:
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
        load = Load(connections=connections, duration=seconds, warmup=0, threads=2)
        run_wrk(qapp.url + target.path, load, method=target.method, headers=headers)
        with urllib.request.urlopen(qapp.url + "/_bench/profile", timeout=30) as answer:
            dump = Path(json.load(answer)["path"])
        return top(dump)


def summary(spots: Sequence[Hotspot]) -> str:
    """One line: each function and its share of own time."""
    return ", ".join(f"{s.function} {s.share:g} %" for s in spots)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hotspots", description=__doc__)
    p.add_argument("--route", choices=sorted(ROUTES), default="cache-get")
    p.add_argument("--server", choices=("granian", "hypercorn"), default="granian")
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument("-d", "--duration", type=float, default=3.0)
    p.add_argument("-n", "--count", type=int, default=6, help="functions to show")
    args = p.parse_args(argv)
    spots = profile_route(
        args.route, server=args.server, connections=args.connections, seconds=args.duration
    )
    for s in spots[: args.count]:
        print(f"{s.share:5.1f} %  {s.calls:>9} calls  {s.function}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
