"""The ``python -m bench`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.report import RESULTS, write
from bench.routes import ROUTES
from bench.runner import QAPP_SERVERS, STORES, QappServer, Settings, StoreName, run, say
from bench.targets import Target, evaluate
from bench.wrk import BenchError, wrk_binary
from qapp.testing import ServerError
from qapp.testing.postgres import PostgresServerError


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"want positive integers like 1,2, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parser() -> argparse.ArgumentParser:
    defaults = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark qapp's routes on hypercorn and granian against the store "
        "ceilings, a Flask + gunicorn peer, a FastAPI + uvicorn peer and a bare-ASGI "
        "ceiling, in one run, with wrk. Starts and stops its own servers on free loopback ports.",
    )
    p.add_argument(
        "-d",
        "--duration",
        type=float,
        default=defaults.duration,
        help="seconds of measured load per route (default %(default)s)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=defaults.warmup,
        help="seconds of unmeasured load first; 0 for none (default %(default)s)",
    )
    p.add_argument(
        "-c",
        "--connections",
        type=int,
        default=defaults.connections,
        help="wrk connections for every route (default %(default)s)",
    )
    p.add_argument(
        "--high-connections",
        type=int,
        default=defaults.high_connections,
        help="connections for the second run of /health, the atomic counter and the "
        "one-store-call reads; 0 skips it (default %(default)s)",
    )
    p.add_argument(
        "-w",
        "--workers",
        type=_ints,
        default=defaults.workers,
        help="worker counts, comma-separated (default 1,2)",
    )
    p.add_argument(
        "--stores",
        type=_names,
        default=defaults.stores,
        help="stores for qapp: sqlite,redis,postgresql (default all three)",
    )
    p.add_argument(
        "-r",
        "--routes",
        type=_names,
        default=defaults.routes,
        help=f"routes, comma-separated, from: {', '.join(ROUTES)} (default all)",
    )
    p.add_argument(
        "-t",
        "--threads",
        type=int,
        default=defaults.threads,
        help="wrk threads (default %(default)s)",
    )
    p.add_argument(
        "--peer-threads",
        type=int,
        default=defaults.peer_threads,
        help="gunicorn gthread threads per worker (default %(default)s)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=defaults.repeat,
        help="rounds over every route; each cell reports its median (default %(default)s)",
    )
    p.add_argument(
        "--servers",
        type=_names,
        default=defaults.servers,
        help="HTTP servers for qapp: hypercorn,granian (default both)",
    )
    p.add_argument(
        "--no-peer",
        action="store_true",
        help="skip the peers (Flask, FastAPI) and the bare-ASGI ceilings",
    )
    p.add_argument(
        "--no-flask",
        action="store_true",
        help="skip the Flask peer only (FastAPI and the bare-ASGI ceilings still run)",
    )
    p.add_argument(
        "--no-metrics-cost",
        action="store_true",
        help="skip the fast path's atomic route with /metrics on",
    )
    p.add_argument(
        "--profile-missed",
        action="store_true",
        help="after the run, profile one qapp worker (cProfile) on each route whose "
        "ratio target was missed, and add its top functions to the target",
    )
    p.add_argument("--no-ceilings", action="store_true", help="skip the store ceilings")
    p.add_argument("--no-chart", action="store_true", help="write JSON and Markdown only")
    p.add_argument(
        "-o", "--out", type=Path, default=RESULTS, help="output directory (default bench/results)"
    )
    p.add_argument(
        "--scale", action="store_true", help="the stores' cost curve instead (--scale --help)"
    )
    return p


def profile_missed(targets: list[Target], settings: Settings) -> list[Target]:
    """Add to each missed route target the top functions of a profiled qapp worker on it."""
    from bench.hotspots import profile_route, summary

    found: dict[tuple[str, str], str] = {}
    out = []
    for t in targets:
        if t.met is False and t.route and t.server in QAPP_SERVERS.values():
            kind = "hypercorn" if t.server == "qapp" else "granian"
            if (kind, t.route) not in found:
                say(f"-- profiling one qapp worker on {kind}, {t.route}")
                seconds = min(3.0, settings.duration)
                profile = profile_route(
                    t.route, server=kind, connections=settings.connections, seconds=seconds
                )
                found[(kind, t.route)] = (
                    f"one qapp worker's own time (cProfile), {summary(profile)}"
                )
            t = dataclasses.replace(t, detail=f"{t.detail}; {found[(kind, t.route)]}")
        out.append(t)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (whether or not targets were met)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--scale" in argv:
        from bench.scale_cli import main as scale

        return scale([arg for arg in argv if arg != "--scale"])
    args = parser().parse_args(argv)
    known: dict[str, StoreName] = {name: name for name in STORES}
    bad = [s for s in args.stores if s not in known]
    if bad or not args.stores:
        parser().error(f"unknown stores {bad}; known: {', '.join(STORES)}")
    stores: tuple[StoreName, ...] = tuple(known[s] for s in args.stores)
    odd = [s for s in args.servers if s not in ("hypercorn", "granian")]
    if odd or not args.servers:
        parser().error(f"unknown servers {odd}; known: hypercorn, granian")
    servers: tuple[QappServer, ...] = tuple(
        "granian" if s == "granian" else "hypercorn" for s in args.servers
    )
    settings = Settings(
        workers=args.workers,
        stores=stores,
        routes=args.routes,
        connections=args.connections,
        high_connections=args.high_connections,
        duration=args.duration,
        warmup=args.warmup,
        threads=args.threads,
        servers=servers,
        peer=not args.no_peer,
        flask=not args.no_flask,
        metrics_cost=not args.no_metrics_cost,
        peer_threads=args.peer_threads,
        ceilings=not args.no_ceilings,
        repeat=max(1, args.repeat),
    )
    try:
        wrk_binary()
        result = run(settings)
        targets = evaluate(result)
        if args.profile_missed:
            targets = profile_missed(targets, settings)
        paths = write(result, args.out, with_chart=not args.no_chart, targets=targets)
    except (BenchError, ServerError) as exc:
        say(f"bench: {exc}")
        return 2
    except PostgresServerError as exc:
        # Its message may carry the server's log; the first line says what is wrong.
        say(f"bench: {str(exc).splitlines()[0]} (or leave it out: --stores sqlite,redis)")
        return 2
    except KeyboardInterrupt:
        say("bench: interrupted; every server it started has been stopped")
        return 130
    print(f"\nTargets (ratios from this run, {result.seconds:g} s):")
    for t in targets:
        met = {True: "met", False: "MISSED", None: "not measured"}[t.met]
        value = "n/a" if t.measured is None else f"{t.measured:.2f}"
        print(f"  [{met:^12}] {t.name:<52} {t.setting:<38} {value:>6} (goal {t.goal})")
        if t.detail and t.met is not True:
            print(f"  {'':14} {t.detail}")
    print("\nWrote " + ", ".join(str(p) for p in paths.values()))
    return 0
