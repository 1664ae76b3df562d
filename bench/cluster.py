"""Counter throughput on Redis Cluster: 1 master against 3, one hot key against many.

``python -m bench.cluster --repeat 3`` starts a cluster of 1 master, then
one of 3 (no replicas: only the masters count increments), and on each runs
``store.incr`` as fast as ``--processes`` client processes with
``--lanes`` concurrent increments each can, for ``--seconds``, twice: on one
hot key, and on ``--keys`` keys spread over every slot. It prints the
median increments per second of each cell and the ratios side by side.

What to expect, and why: a single hot key lives in one slot, so on one
master whatever the cluster's size: more masters cannot make it faster.
Many keys spread over the masters, so the masters share the work; whether
that shows depends on where the bottleneck is. On a small machine the
clients (Python) saturate the CPU long before three redis-servers do, and
the ratio stays near 1. qapp also sends the increments of one key that
overlap in one worker as one ``INCRBY`` of their sum, so a hot key costs
fewer round trips than many cold ones: per process it can be the faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from redis.crc import key_slot

from harness.topologies import RedisCluster

ROOT = Path(__file__).resolve().parents[1]

#: One client process: increments for a while, then prints how many it made.
CLIENT = """
import asyncio, json, sys, time
from qapp.state import open_store

async def main(url, keys, lanes, seconds):
    async with await open_store(url) as store:
        await asyncio.gather(*(store.incr(key) for key in keys))  # connections warm
        done, end = 0, time.monotonic() + seconds
        async def lane(n):
            nonlocal done
            i = n
            while time.monotonic() < end:
                await store.incr(keys[i % len(keys)])
                done += 1
                i += lanes
        await asyncio.gather(*(lane(n) for n in range(lanes)))
    print(json.dumps(done / seconds))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
"""


def spread_keys(count: int) -> list[str]:
    """``count`` keys whose Redis keys fall in evenly spaced slot bands (all masters)."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < count:
        key = f"spread{n}"
        band = key_slot(f"qapp:k:{{{key}}}".encode()) * count // 16384
        keys.setdefault(band, key)
        n += 1
    return [keys[band] for band in sorted(keys)]


def measure(url: str, keys: list[str], processes: int, lanes: int, seconds: float) -> float:
    """Increments per second of ``processes`` clients together."""
    argv = [sys.executable, "-c", CLIENT, url, json.dumps(keys), str(lanes), str(seconds)]
    clients = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(processes)
    ]
    total = 0.0
    for client in clients:
        out, _ = client.communicate(timeout=seconds + 60)
        if client.returncode != 0:
            raise RuntimeError(f"a client failed (exit {client.returncode})")
        total += float(out)
    return total


def run(args: argparse.Namespace) -> dict[tuple[int, str], float]:
    """The median rate of each (masters, keys) cell over ``--repeat`` runs."""
    workloads = {"hot key": ["hot"], f"{args.keys} keys": spread_keys(args.keys)}
    medians: dict[tuple[int, str], float] = {}
    for masters in (1, 3):
        with RedisCluster(masters=masters, replicas=0) as cluster:
            for name, keys in workloads.items():
                rates = [
                    measure(cluster.url, keys, args.processes, args.lanes, args.seconds)
                    for _ in range(args.repeat)
                ]
                medians[masters, name] = statistics.median(rates)
                print(
                    f"{masters} master(s), {name}: "
                    + ", ".join(f"{rate:,.0f}" for rate in rates)
                    + " incr/s",
                    file=sys.stderr,
                )
                cluster.flushall()
    return medians


def table(medians: dict[tuple[int, str], float]) -> str:
    """The medians as a Markdown table, with the ratios side by side."""
    names = sorted({name for _, name in medians}, key=lambda n: n != "hot key")
    lines = [
        "| keys | 1 master | 3 masters | 3 ÷ 1 |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        one, three = medians[1, name], medians[3, name]
        lines.append(f"| {name} | {one:,.0f} | {three:,.0f} | {three / one:.2f} |")
    hot, many = names
    lines.append(
        f"| {many} ÷ hot key | {medians[1, many] / medians[1, hot]:.2f} "
        f"| {medians[3, many] / medians[3, hot]:.2f} | |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (default: 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a run (default: 3)")
    parser.add_argument("--processes", type=int, default=2, help="client processes (default: 2)")
    parser.add_argument("--lanes", type=int, default=64, help="increments in flight per process")
    parser.add_argument("--keys", type=int, default=256, help="spread keys (default: 256)")
    args = parser.parse_args(argv)
    args.repeat = max(1, args.repeat)
    medians = run(args)
    print(
        f"Counter increments per second, median of {args.repeat}; {args.processes} client "
        f"processes × {args.lanes} in flight, {args.seconds:g} s per run"
    )
    print(table(medians))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
