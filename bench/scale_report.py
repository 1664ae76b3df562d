"""The cost curve's targets, and its JSON, Markdown and chart under ``bench/results/scale/``.

Two targets, each per store and operation: p99 at the largest size within
1.5 times p99 at the smallest (at 10^6 and 10^3 in a full run), and p99
while expired rows are cleaned up at most twice p99 just before.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.scale import ScaleRun
from bench.scale_load import OPS

#: Where ``python -m bench --scale`` writes unless told otherwise.
RESULTS = Path(__file__).resolve().parent / "results" / "scale"
#: p99 at the largest size over p99 at the smallest, at most.
GROWTH_GOAL = 1.5
#: p99 while the sweep runs over p99 just before, at most.
SWEEP_GOAL = 2.0
#: Packages whose versions the results record.
PACKAGES = ("aiosqlite", "asyncpg", "redis")


def _power(n: int) -> str:
    """``10^6`` for a power of ten, else the number with separators."""
    text = str(n)
    if text.startswith("1") and set(text[1:]) <= {"0"} and len(text) > 1:
        return f"10^{len(text) - 1}"
    return f"{n:,}"


def _ratio(new: float | None, old: float | None) -> float | None:
    return round(new / old, 2) if new is not None and old else None


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the run, per store and operation, with its measured ratio and verdict."""
    found: list[dict[str, Any]] = []
    for c in data["curves"]:
        steps = c["steps"]
        first, last = (steps[0], steps[-1]) if steps else (None, None)
        for op in OPS:
            ratio = None
            name = "p99 growth"
            if first is not None and last is not None and first is not last:
                ratio = _ratio(last["ops"][op]["p99_ms"], first["ops"][op]["p99_ms"])
                name = f"p99 at {_power(last['size'])} ÷ p99 at {_power(first['size'])}"
            found.append(_target(c["store"], op, name, ratio, GROWTH_GOAL))
        sweep = c["sweep"]
        for op in OPS:
            ratio = None
            if sweep is not None:
                ratio = _ratio(sweep["during"][op]["p99_ms"], sweep["baseline"][op]["p99_ms"])
            found.append(_target(c["store"], op, "p99 during cleanup ÷ before", ratio, SWEEP_GOAL))
    return found


def _target(store: str, op: str, name: str, ratio: float | None, goal: float) -> dict[str, Any]:
    met = None if ratio is None else ratio <= goal
    return {"store": store, "op": op, "name": name, "measured": ratio, "goal": goal, "met": met}


def machine() -> dict[str, Any]:
    """Where the run happened: cores, OS, Python and the drivers' versions."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": versions,
    }


def to_dict(run: ScaleRun) -> dict[str, Any]:
    """The run as plain data, its targets included."""
    data = asdict(run)
    data["started"] = datetime.fromtimestamp(run.started, UTC).strftime("%Y-%m-%d %H:%M")
    data["machine"] = machine()
    data["targets"] = targets(data)
    return data


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def markdown(data: dict[str, Any]) -> str:
    """The tables: one row per store and size, the cleanup, and the targets."""
    s = data["settings"]
    lines = [
        f"Cost curve, {data['started']} UTC, {data['machine']['cores']} cores, "
        f"{data['seconds']:g} s in all. Each operation {s['ops']:,} times, "
        f"{s['concurrency']} at once, in process through the store API.",
        "",
        "| store | N | fill s | rows/s | B/session | B/cache value "
        + "".join(f"| {op} p50 ms | {op} p99 ms " for op in OPS)
        + "|",
        "|---|---:|---:|---:|---:|---:" + "|---:|---:" * len(OPS) + "|",
    ]
    for c in data["curves"]:
        for st in c["steps"]:
            cells = [
                c["store"],
                _power(st["size"]),
                f"{st['fill_seconds']:.1f}",
                f"{st['rows_per_s']:,.0f}",
                f"{st['bytes_per_session']:,.0f}",
                f"{st['bytes_per_cache_value']:,.0f}",
            ]
            for op in OPS:
                cells += [_ms(st["ops"][op]["p50_ms"]), _ms(st["ops"][op]["p99_ms"])]
            lines.append("| " + " | ".join(cells) + " |")
    sweeps = [c for c in data["curves"] if c["sweep"] is not None]
    if sweeps:
        lines += [
            "",
            "Expired rows cleaned up at the largest size: p99 ms just before → while it runs "
            "(operations interleaved; samples while it ran).",
            "",
            "| store | N | expired | cleaned by | removed | seconds "
            + "".join(f"| {op} p99 ms " for op in OPS)
            + "| samples |",
            "|---|---:|---:|---|---:|---:" + "|---:" * len(OPS) + "|---:|",
        ]
        for c in sweeps:
            w = c["sweep"]
            cells = [
                c["store"],
                _power(w["size"]),
                f"{w['expired']:,}",
                w["how"],
                f"{w['removed']:,}",
                f"{w['seconds']:.1f}",
            ]
            for op in OPS:
                before, during = w["baseline"][op]["p99_ms"], w["during"][op]["p99_ms"]
                cells.append(f"{_ms(before)} → {_ms(during)}")
            cells.append(f"{sum(w['during'][op]['count'] for op in OPS):,}")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| store | operation | target | measured | goal | |"]
    lines.append("|---|---|---|---:|---:|---|")
    for t in data["targets"]:
        measured = "—" if t["measured"] is None else f"{t['measured']:.2f}×"
        lines.append(
            f"| {t['store']} | {t['op']} | {t['name']} | {measured} | ≤ {t['goal']:g}× "
            f"| {_verdict(t['met'])} |"
        )
    return "\n".join(lines) + "\n"


def chart(data: dict[str, Any], path: Path) -> None:
    """p99 (solid) and p50 (dashed) latency against size, one panel per operation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"sqlite": "#4c72b0", "redis": "#c44e52", "postgresql": "#55a868"}
    fig, axes = plt.subplots(1, len(OPS), figsize=(4.2 * len(OPS), 3.8), sharey=True)
    for ax, op in zip(axes, OPS, strict=True):
        for c in data["curves"]:
            sizes = [st["size"] for st in c["steps"]]
            colour = colours.get(c["store"], "#555555")
            p99 = [st["ops"][op]["p99_ms"] for st in c["steps"]]
            p50 = [st["ops"][op]["p50_ms"] for st in c["steps"]]
            ax.plot(sizes, p99, marker="o", color=colour, label=f"{c['store']} p99")
            ax.plot(sizes, p50, linestyle="--", color=colour, alpha=0.6, label=f"{c['store']} p50")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(op, fontsize=10)
        ax.set_xlabel("sessions (and as many cache values) in the store")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("latency, ms")
    axes[0].legend(fontsize=7)
    s = data["settings"]
    fig.suptitle(
        f"qapp stores: latency against size, {s['ops']:,} ops × {s['concurrency']} concurrent, "
        f"{data['machine']['cores']} cores ({data['started']} UTC)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(
    run: ScaleRun, out: Path, *, with_chart: bool = True
) -> tuple[dict[str, Any], list[Path]]:
    """Write ``scale.json``, ``scale.md`` and (unless told not to) ``scale.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = to_dict(run)
    paths = [out / "scale.json", out / "scale.md"]
    paths[0].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    paths[1].write_text(markdown(data))
    if with_chart:
        paths.append(out / "scale.png")
        chart(data, paths[-1])
    return data, paths
