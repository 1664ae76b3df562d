"""Write one run's results: ``results.json``, ``results.md`` and ``results.png``.

The JSON holds everything (settings, machine, versions, every measurement,
the ceilings and the targets); the Markdown table and the chart are views
of it, and the README embeds both.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.runner import PEERS, Measurement, Run
from bench.targets import Target, evaluate
from bench.wrk import wrk_version
from qapp.store.backends.postgres import POOL_SIZE
from qapp.testing import redis_server_binary
from qapp.testing.postgres import PostgresServerError, postgres_bindir

#: Default output directory, inside the ``bench`` package.
RESULTS = Path(__file__).with_name("results")
PACKAGES = (
    "quart",
    "hypercorn",
    "granian",
    "aiosqlite",
    "redis",
    "asyncpg",
    "prometheus-client",
    "flask",
    "gunicorn",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
)

#: How each server is named in the table and the chart.
DISPLAY = {
    "qapp": "qapp · hypercorn",
    "qapp-granian": "qapp · granian",
    "qapp-granian-metrics": "qapp · granian, /metrics on",
    "peer": "Flask + gunicorn",
    "fastapi": "FastAPI + uvicorn",
    "ceiling": "bare ASGI · granian",
    "ceiling-hypercorn": "bare ASGI · hypercorn",
}

#: The ratio table's columns: ``(numerator, denominator, heading)``.
RATIOS = (
    ("qapp", "peer", "hypercorn ÷ Flask"),
    ("qapp", "fastapi", "hypercorn ÷ FastAPI"),
    ("qapp-granian", "peer", "granian ÷ Flask"),
    ("qapp-granian", "fastapi", "granian ÷ FastAPI"),
    ("qapp-granian", "ceiling", "granian ÷ bare granian"),
    ("qapp", "ceiling-hypercorn", "hypercorn ÷ bare hypercorn"),
)


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None if it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _redis_version() -> str:
    proc = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip()


def _postgres_version() -> str | None:
    try:
        binary = postgres_bindir() / "postgres"
    except PostgresServerError:
        return None
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None


def machine() -> dict[str, Any]:
    """Where the run happened: CPU, cores, OS, Python and the tools' versions."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "wrk": wrk_version(),
        "redis_server": _redis_version(),
        "postgres": _postgres_version(),
        "packages": {name: package_version(name) for name in PACKAGES},
    }


def _measurement(m: Measurement) -> dict[str, Any]:
    row: dict[str, Any] = {
        "server": m.server,
        "workers": m.workers,
        "store": m.store,
        "route": m.route,
        "label": m.label,
        "connections": m.connections,
        "available": m.result is not None,
    }
    if m.result is None:
        row["unavailable"] = m.unavailable
    else:
        # The median round's numbers, then every round's req/s and failures.
        row.update(dataclasses.asdict(m.result))
        row["rounds_rps"] = [r.rps for r in m.runs]
        row["rounds_spread"] = m.spread
        # Failures count over every round, not just the median one.
        row["non_2xx"] = sum(r.non_2xx for r in m.runs)
        row["warmup_failed_all_rounds"] = sum(r.warmup_failed for r in m.runs)
        row["socket_errors_all_rounds"] = (
            m.failed - row["non_2xx"] - row["warmup_failed_all_rounds"]
        )
        refresh = m.refresh
        if refresh is not None:
            # A cached value under load: how often it was computed, against its work.
            row["refresh"] = {
                **dataclasses.asdict(refresh),
                "computations_per_expiry": refresh.per_expiry,
            }
    return row


def to_dict(run: Run, targets: list[Target]) -> dict[str, Any]:
    """The whole run as plain JSON-ready data."""
    started = datetime.datetime.fromtimestamp(run.started, datetime.UTC)
    return {
        "started": started.isoformat(timespec="seconds"),
        "seconds": run.seconds,
        "settings": dataclasses.asdict(run.settings),
        "machine": machine(),
        "measurements": [_measurement(m) for m in run.measurements],
        "ceilings": [dataclasses.asdict(c) for c in run.ceilings],
        "targets": [dataclasses.asdict(t) for t in targets],
    }


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _ratio_table(rows: list[dict[str, Any]]) -> list[str]:
    """qapp on each server against the peers and the ceiling, on their shared routes."""
    cell = {
        (m["server"], m["workers"], m["route"], m["connections"]): m
        for m in rows
        if m["available"] and m["store"] == "redis"
    }

    def rps(server: str, key: tuple[int, str, int]) -> float | None:
        m = cell.get((server, *key))
        return None if m is None else float(m["rps"])

    keys = sorted({(w, r, c) for (s, w, r, c) in cell if s in PEERS})
    if not keys:
        return []
    ran = {s for (s, _, _, _) in cell}
    servers = [
        s
        for s in ("qapp", "qapp-granian", "peer", "fastapi", "ceiling", "ceiling-hypercorn")
        if s in ran
    ]
    ratio_columns = [r for r in RATIOS if r[0] in ran and r[1] in ran]
    lines = [
        "",
        "qapp against the peers and the ceiling (Redis, req/s of the same run, and their "
        "ratios; p99 in ms):",
        "",
        "| workers | route | conns | "
        + " | ".join(DISPLAY[s] for s in servers)
        + " | "
        + " | ".join(heading for _, _, heading in ratio_columns)
        + " | p99 granian / FastAPI |",
        "|---:|---|---:|" + "---:|" * (len(servers) + len(ratio_columns) + 1),
    ]
    for key in keys:
        workers, _, conns = key
        label = next(m["label"] for (s, w, r, c), m in cell.items() if (w, r, c) == key)
        counts = " | ".join(_cell(rps(s, key), ",.0f") for s in servers)
        ratios = []
        for top, bottom, _ in ratio_columns:
            a, b = rps(top, key), rps(bottom, key)
            ratios.append(_cell(None if a is None or not b else a / b, ".2f"))
        ours, peer = cell.get(("qapp-granian", *key)), cell.get(("fastapi", *key))
        p99 = (
            "n/a"
            if ours is None or peer is None
            else f"{ours['p99_ms']:.0f} / {peer['p99_ms']:.0f}"
        )
        lines.append(
            f"| {workers} | `{label}` | {conns} | {counts} | {' | '.join(ratios)} | {p99} |"
        )
    metered = [
        (key, rps("qapp-granian-metrics", key), rps("qapp-granian", key))
        for key in sorted({(w, r, c) for (s, w, r, c) in cell if s == "qapp-granian-metrics"})
    ]
    for (workers, _, conns), on, off in metered:
        if on is not None and off:
            lines.append(
                f"\n/metrics on, {workers} worker(s), {conns} connections: atomic "
                f"{on:,.0f} req/s against {off:,.0f} off ({on / off:.2f}×)."
            )
    return lines


def _against_ceilings(data: dict[str, Any]) -> list[str]:
    """The atomic counter route on each store against that store's own ceiling."""
    ceiling = {c["store"]: c["ops_per_s"] for c in data["ceilings"] if c["ops_per_s"]}
    rows = [
        m
        for m in data["measurements"]
        if m["available"]
        and m["route"] == "atomic"
        and m["server"] in ("qapp", "qapp-granian")
        and m["store"] in ceiling
        and m["connections"] == data["settings"]["connections"]
    ]
    if not rows:
        return []
    lines = [
        "",
        "The atomic counter against its store's ceiling (above 1: overlapping increments "
        "of one key went out as one statement of their sum):",
        "",
        "| server | workers | store | atomic req/s | ceiling ops/s | atomic ÷ ceiling |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for m in rows:
        top = ceiling[m["store"]]
        lines.append(
            f"| {DISPLAY[m['server']]} | {m['workers']} | {m['store']} | {m['rps']:,.0f} "
            f"| {top:,.0f} | {m['rps'] / top:.2f} |"
        )
    return lines


def _setup(s: dict[str, Any]) -> str:
    """What ran: qapp's servers, and the peers and stores only where this run had them."""
    text = (
        "qapp: `qapp serve` with the repository's hypercorn.toml (asyncio workers, one "
        "listening socket each), on hypercorn and with `--server granian` (the fast path; "
        "uvloop, HTTP/1.1)"
    )
    text += ", and once more on granian with `QAPP_METRICS=1`. " if s["metrics_cost"] else ". "
    if s["peer"]:
        flask = (
            f"Flask on gunicorn gthread, {s['peer_threads']} threads per worker, redis-py "
            "sync client (the counter and /health only); "
            if s.get("flask", True)
            else ""
        )
        text += (
            f"Peers, on the same Redis: {flask}FastAPI on "
            "uvicorn (uvloop, httptools), redis.asyncio; and the ceilings, a bare ASGI "
            "function on granian with the fast path's settings and on hypercorn under "
            "`qapp serve` with its defaults, redis.asyncio. The peers' reads make qapp's "
            "Redis calls (bench/peers/reads.py). Each peer's "
            "pool is bounded at 64 connections, as qapp's Redis store is. "
        )
    if "postgresql" in s["stores"]:
        text += (
            "PostgreSQL runs with its own defaults (fsync on: every commit waits for the "
            "disk), as a team's database would; qapp's PostgreSQL store keeps a pool of up "
            f"to {POOL_SIZE} connections per worker."
        )
    return text.rstrip()


def markdown(data: dict[str, Any]) -> str:
    """The run as Markdown: settings, a table of routes, ceilings and targets."""
    s, mach = data["settings"], data["machine"]
    lines = [
        f"Run {data['started']} on {mach['cores']} cores ({mach['cpu']}), {mach['os']}, "
        f"Python {mach['python']}; {mach['wrk']}; {mach['redis_server'].split(' sha')[0]}"
        + (f"; {mach['postgres']}" if mach.get("postgres") else "")
        + ".",
        f"wrk: {s['threads']} threads, {s['duration']:g} s per route after a "
        f"{s['warmup']:g} s warm-up, {s['repeat']} round(s); each cell is the median "
        "round, and the servers of one worker count run each route back to back. " + _setup(s),
        "",
        "| server | workers | store | route | conns | req/s | p50 ms | p99 ms "
        "| server CPU ms/req | non-2xx |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in data["measurements"]:
        name = DISPLAY.get(m["server"], m["server"])
        head = f"| {name} | {m['workers']} | {m['store']} | `{m['label']}` | {m['connections']} "
        if not m["available"]:
            lines.append(head + f"| unavailable: {m['unavailable']} | | | | |")
            continue
        errors, warm = m["socket_errors_all_rounds"], m["warmup_failed_all_rounds"]
        failed = f"{m['non_2xx']}" + (f" (+{errors} socket errors)" if errors else "")
        failed += f" (+{warm} failed in warm-up)" if warm else ""
        lines.append(
            head + f"| {m['rps']:,.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} "
            f"| {_cell(m['cpu_ms_per_request'], '.3f')} | {failed} |"
        )
    refreshing = [m for m in data["measurements"] if m["available"] and "refresh" in m]
    if refreshing:
        lines += [
            "",
            "A `cached` value under steady load across its expiries (same runs): latency "
            "against the work of one computation, and computations per expiry (ttl):",
            "",
            "| server | workers | store | route | conns | p50 ms | p99 ms | work ms | ttl s "
            "| computations | per expiry |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in refreshing:
            f = m["refresh"]
            lines.append(
                f"| {DISPLAY.get(m['server'], m['server'])} | {m['workers']} | {m['store']} "
                f"| `{m['label']}` | {m['connections']} "
                f"| {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {f['work'] * 1000:.0f} "
                f"| {f['ttl']:g} | {f['computations']} | {f['computations_per_expiry']:.2f} |"
            )
    lines += _ratio_table(data["measurements"])
    if data["ceilings"]:
        lines += ["", "Store ceilings (same run, same servers):", ""]
        lines += ["| store | ops/s | how |", "|---|---:|---|"]
        for c in data["ceilings"]:
            lines.append(
                f"| {c['name']} | {_cell(c['ops_per_s'], ',.0f')} | {c['reason'] or c['how']} |"
            )
        lines += _against_ceilings(data)
    lines += ["", "Targets (ratios from this run):", ""]
    lines += ["| target | setting | measured | goal | met |", "|---|---|---:|---|---|"]
    for t in data["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        detail = f" ({t['detail']})" if t["detail"] and t["met"] is not True else ""
        lines.append(
            f"| {t['name']} | {t['setting']} | {_cell(t['measured'], '.2f')} | {t['goal']} "
            f"| {met}{detail} |"
        )
    return "\n".join(lines) + "\n"


def chart(data: dict[str, Any], path: Path) -> None:
    """A bar chart of req/s per route: qapp on SQLite and Redis beside the peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["measurements"]
    workers = sorted({m["workers"] for m in rows})
    series = [
        ("qapp", "sqlite", "qapp · hypercorn · SQLite", "#4c72b0"),
        ("qapp", "redis", "qapp · hypercorn · Redis", "#dd8452"),
        ("qapp-granian", "sqlite", "qapp · granian · SQLite", "#55a868"),
        ("qapp-granian", "redis", "qapp · granian · Redis", "#c44e52"),
        ("qapp", "postgresql", "qapp · hypercorn · PostgreSQL", "#64b5cd"),
        ("qapp-granian", "postgresql", "qapp · granian · PostgreSQL", "#2a6f97"),
        ("qapp-granian-metrics", "redis", "qapp · granian · Redis, /metrics on", "#e39ba0"),
        ("peer", "redis", "Flask + gunicorn · Redis", "#8c8c8c"),
        ("fastapi", "redis", "FastAPI + uvicorn · Redis", "#8172b3"),
        ("ceiling", "redis", "bare ASGI · granian · Redis", "#222222"),
        ("ceiling-hypercorn", "redis", "bare ASGI · hypercorn · Redis", "#555555"),
    ]
    # Only what this run measured: a series with no bars would still take a slot.
    ran = {(m["server"], m["store"]) for m in rows}
    series = [entry for entry in series if entry[:2] in ran]
    cases: list[tuple[str, int]] = []
    for m in rows:
        if (m["label"], m["connections"]) not in cases:
            cases.append((m["label"], m["connections"]))
    cell = {(m["server"], m["store"], m["workers"], m["label"], m["connections"]): m for m in rows}
    fig, axes = plt.subplots(
        len(workers), 1, figsize=(max(10.0, 2.2 * len(cases)), 4.2 * len(workers)), squeeze=False
    )
    width = 0.8 / len(series)
    for ax, w in zip(axes[:, 0], workers, strict=True):
        for i, (server, store, name, colour) in enumerate(series):
            xs, ys = [], []
            for x, (label, conns) in enumerate(cases):
                m = cell.get((server, store, w, label, conns))
                if m is None:
                    continue
                offset = x + (i - (len(series) - 1) / 2) * width
                if m["available"]:
                    xs.append(offset)
                    ys.append(m["rps"])
                else:
                    # A route not built yet: say so where its bar would be.
                    ax.text(offset, 0, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
            ax.bar(xs, ys, width, label=name, color=colour)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(
            [f"{label.replace(' ', chr(10))}\n{c} conns" for label, c in cases], fontsize=7
        )
        ax.set_ylabel("requests / s")
        ax.set_title(f"{w} worker{'s' if w > 1 else ''}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", ncols=2)
    fig.suptitle(
        f"qapp{' vs peers' if data['settings']['peer'] else ''}, "
        f"{data['machine']['cores']} cores, "
        f"wrk {data['settings']['duration']:g} s per bar, median of "
        f"{data['settings']['repeat']} round(s) ({data['started']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(
    run: Run, out: Path, *, with_chart: bool = True, targets: list[Target] | None = None
) -> dict[str, Path]:
    """Write the JSON, the Markdown and (unless told not to) the chart into ``out``.

    ``targets`` are the run's targets if already evaluated (with profiles added, say).
    """
    out.mkdir(parents=True, exist_ok=True)
    data = to_dict(run, evaluate(run) if targets is None else targets)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    paths["markdown"].write_text(markdown(data))
    if with_chart:
        paths["png"] = out / "results.png"
        chart(data, paths["png"])
    return paths
