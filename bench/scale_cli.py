"""The ``python -m bench --scale`` command line: the cost curve of every store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.scale import run_scale
from bench.scale_load import STORES, ScaleSettings, StoreName
from bench.scale_report import RESULTS, write
from qapp.testing import ServerError
from qapp.testing.postgres import PostgresServerError


def say(message: str) -> None:
    """Progress goes to stderr, so stdout stays free for the summary."""
    print(message, file=sys.stderr, flush=True)


#: The largest size accepted: ten million sessions and as many cache values.
MAX_SIZE = 10_000_000


def sizes(text: str) -> tuple[int, ...]:
    """``1e3,1e4`` or ``1000,10000``: whole numbers from 1 to :data:`MAX_SIZE`, ascending."""
    found: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            number = float(part.replace("_", ""))
        except ValueError:
            number = 0.5
        if not number.is_integer() or not 1 <= number <= MAX_SIZE:
            raise argparse.ArgumentTypeError(
                f"want whole numbers from 1 to {MAX_SIZE:.0e} like 1e3,1e4, got {part!r}"
            )
        found.append(int(number))
    if not found:
        raise argparse.ArgumentTypeError(f"want sizes like 1e3,1e4, got {text!r}")
    return tuple(sorted(set(found)))


def stores(text: str) -> tuple[StoreName, ...]:
    """``sqlite,redis``: stores the cost curve knows."""
    known: dict[str, StoreName] = {name: name for name in STORES}
    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [name for name in names if name not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown stores {bad}; known: {', '.join(STORES)}")
    return tuple(known[name] for name in names)


def parser() -> argparse.ArgumentParser:
    defaults = ScaleSettings()
    p = argparse.ArgumentParser(
        prog="python -m bench --scale",
        description="The cost curve: fill SQLite, Redis and PostgreSQL with N sessions and N "
        "cache values through the store API, and measure p50/p99 of a session read, a cache "
        "get and an atomic incr at each N, the bytes per session, and the p99 while expired "
        "rows are cleaned up. Starts and stops its own servers on free loopback ports.",
    )
    p.add_argument(
        "--sizes",
        type=sizes,
        default=defaults.sizes,
        help="sessions (and cache values) at each step, grown in one store "
        "(default 1e3,1e4,1e5,1e6)",
    )
    p.add_argument(
        "--stores",
        type=stores,
        default=defaults.stores,
        help="sqlite,redis,postgresql (default all three)",
    )
    p.add_argument(
        "--ops",
        type=int,
        default=defaults.ops,
        help="operations of each kind measured at each size (default %(default)s)",
    )
    p.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help="operations in flight at once (default %(default)s)",
    )
    p.add_argument(
        "--expired-share",
        type=float,
        default=defaults.expired_share,
        help="expired sessions written at the largest size, as a share of it; 0 skips the "
        "cleanup phase (default %(default)s)",
    )
    p.add_argument(
        "--sweep-cap",
        type=float,
        default=defaults.sweep_cap,
        help="seconds the cleanup phase measures at most (default %(default)s)",
    )
    p.add_argument("--no-chart", action="store_true", help="write JSON and Markdown only")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=RESULTS,
        help="output directory (default bench/results/scale)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cost curve; 0 when it ran (whether or not targets were met)."""
    args = parser().parse_args(argv)
    if args.ops < 1 or args.concurrency < 1 or not 0 <= args.expired_share <= 1:
        parser().error("--ops and --concurrency must be at least 1, --expired-share 0 to 1")
    settings = ScaleSettings(
        sizes=args.sizes,
        stores=args.stores,
        ops=args.ops,
        concurrency=args.concurrency,
        expired_share=args.expired_share,
        sweep_cap=args.sweep_cap,
    )
    try:
        run = run_scale(settings, say)
        data, paths = write(run, args.out, with_chart=not args.no_chart)
    except ServerError as exc:
        say(f"bench --scale: {exc}")
        return 2
    except PostgresServerError as exc:
        # Its message may carry the server's log; the first line says what is wrong.
        say(f"bench --scale: {str(exc).splitlines()[0]} (or leave it out: --stores sqlite,redis)")
        return 2
    except KeyboardInterrupt:
        say("bench --scale: interrupted; every server it started has been stopped")
        return 130
    print(f"\nTargets ({run.seconds:g} s in all):")
    for t in data["targets"]:
        met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        value = "n/a" if t["measured"] is None else f"{t['measured']:.2f}"
        print(
            f"  [{met:^12}] {t['store']:<10} {t['op']:<12} {t['name']:<30} {value:>6}"
            f" (goal ≤ {t['goal']:g})"
        )
    print("\nWrote " + ", ".join(str(p) for p in paths))
    return 0
