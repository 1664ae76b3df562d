"""The issue's targets, as ratios of measurements taken in one run.

Each target is checked at every worker count (and store) the run measured.
A target whose measurements are missing (a route not built yet, the peer
skipped) is reported as not measured, never as met.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.routes import ONE_CALL_ROUTES
from bench.runner import METERED, PEERS, QAPP_SERVERS, Measurement, Run, ServerName


@dataclass(frozen=True)
class Target:
    """One target at one setting: the ratio measured and whether it holds."""

    name: str
    setting: str
    measured: float | None
    goal: str
    met: bool | None
    detail: str = ""
    #: For a route's ratio: the route, and the qapp server on top (``qapp-granian``, say).
    route: str = ""
    server: str = ""


def _rps(m: Measurement | None) -> float | None:
    return None if m is None or m.result is None else m.result.rps


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return round(top / bottom, 3)


def _missing(*pairs: tuple[str, Measurement | None]) -> str:
    gone = [
        f"{name}: {'not run' if m is None else m.unavailable}"
        for name, m in pairs
        if m is None or m.result is None
    ]
    return "; ".join(gone)


def _p99(m: Measurement | None) -> float | None:
    return None if m is None or m.result is None else m.result.p99_ms


#: How each server is named in a target.
NAMES: dict[ServerName, str] = {
    "qapp": "qapp on hypercorn",
    "qapp-granian": "qapp on granian",
    "qapp-granian-metrics": "qapp on granian with /metrics",
    "peer": "Flask peer",
    "fastapi": "FastAPI peer",
    "ceiling": "bare-ASGI ceiling on granian",
    "ceiling-hypercorn": "bare-ASGI ceiling on hypercorn",
}


def _cpu(m: Measurement | None) -> str:
    cpu = None if m is None or m.result is None else m.result.cpu_ms_per_request
    return "n/a" if cpu is None else f"{cpu:.3f} ms"


def _why(ours: ServerName, o: Measurement | None, theirs: ServerName, t: Measurement | None) -> str:
    """What can be measured about a missed ratio: each side's CPU per request and failures."""
    parts = [f"server CPU per request: {NAMES[ours]} {_cpu(o)}, {NAMES[theirs]} {_cpu(t)}"]
    if o is not None and o.failed:
        parts.append(f"{NAMES[ours]} failed {o.failed} requests")
    return "; ".join(parts)


def _pairs(route: str) -> list[tuple[ServerName, ServerName, float]]:
    """``(ours, theirs, goal)`` for one route: qapp's req/s over the other's, at least ``goal``.

    The fast path against the async peer doing the same store calls and
    against granian with no framework doing them; the default hypercorn path
    against hypercorn with no framework; for the counter, /metrics against none.
    """
    pairs: list[tuple[ServerName, ServerName, float]] = [
        ("qapp-granian", "fastapi", 1.5 if route == "atomic" else 1.2),
        ("qapp-granian", "ceiling", 0.6),
        ("qapp", "ceiling-hypercorn", 0.8),
    ]
    if route == "atomic":
        pairs.append((METERED, "qapp-granian", 0.95))
    return pairs


def _versus(run: Run, workers: int, connections: int) -> list[Target]:
    """The ratio targets of :func:`_pairs` for every one-store-call route this run measured,
    and the fast path's p99 against the async peer's."""
    out = []
    setting = f"{workers} worker(s), redis, {connections} connections"
    s = run.settings
    for route in (r for r in ONE_CALL_ROUTES if r in s.routes):
        for ours_name, theirs_name, goal in _pairs(route):
            # What the command line left out is not a target of this run.
            if theirs_name in PEERS and not s.peer:
                continue
            if ours_name == METERED and not s.metrics_cost:
                continue
            ours = run.find(ours_name, workers, "redis", route, connections)
            theirs = run.find(theirs_name, workers, "redis", route, connections)
            if ours is None and theirs is None:
                continue
            ratio = _ratio(_rps(ours), _rps(theirs))
            # Against a peer, a rate bought with errors is no rate: 0 failures too.
            clean = ours_name == METERED or (ours is not None and not ours.failed)
            met = None if ratio is None else ratio >= goal and clean
            detail = _missing((ours_name, ours), (theirs_name, theirs))
            if met is False:
                detail = _why(ours_name, ours, theirs_name, theirs)
            zero = "" if ours_name == METERED else ", 0 errors"
            out.append(
                Target(
                    f"{NAMES[ours_name]} {route} ≥ {goal:g} × {NAMES[theirs_name]} {route}{zero}",
                    setting,
                    ratio,
                    f"≥ {goal:g}",
                    met,
                    detail,
                    route,
                    ours_name,
                )
            )
    ours = run.find("qapp-granian", workers, "redis", "atomic", connections)
    peer = run.find("fastapi", workers, "redis", "atomic", connections)
    if s.peer and connections == s.high_connections and (ours or peer):
        p99 = _ratio(_p99(ours), _p99(peer))
        out.append(
            Target(
                "qapp on granian atomic p99 ≤ FastAPI peer atomic p99",
                setting,
                p99,
                "≤ 1",
                None if p99 is None else p99 <= 1.0,
                _missing(("qapp-granian", ours), ("fastapi", peer)),
            )
        )
    return out


def evaluate(run: Run) -> list[Target]:
    """Check every target against ``run``'s own measurements."""
    s = run.settings
    out: list[Target] = []
    for workers in s.workers:
        for store, kind in ((store, kind) for kind in s.servers for store in s.stores):
            name = QAPP_SERVERS[kind]
            setting = f"{workers} worker(s), {kind}, {store}, {s.connections} connections"
            health = run.find(name, workers, store, "health", s.connections)
            atomic = run.find(name, workers, store, "atomic", s.connections)
            ratio = _ratio(_rps(atomic), _rps(health))
            out.append(
                Target(
                    "atomic req/s ≥ 0.9 × /health req/s",
                    setting,
                    ratio,
                    "≥ 0.9",
                    None if ratio is None else ratio >= 0.9,
                    _missing(("atomic", atomic), ("health", health)),
                )
            )
            p99 = _ratio(
                None if atomic is None or atomic.result is None else atomic.result.p99_ms,
                None if health is None or health.result is None else health.result.p99_ms,
            )
            out.append(
                Target(
                    "atomic p99 ≤ 2 × /health p99",
                    setting,
                    p99,
                    "≤ 2",
                    None if p99 is None else p99 <= 2.0,
                    _missing(("atomic", atomic), ("health", health)),
                )
            )
        for connections, goal in ((s.connections, 1.3), (s.high_connections, 2.0)):
            if not connections or not s.peer or not s.flask or "redis" not in s.stores:
                continue
            ours = run.find("qapp", workers, "redis", "atomic", connections)
            peer = run.find("peer", workers, "redis", "atomic", connections)
            ratio = _ratio(_rps(ours), _rps(peer))
            out.append(
                Target(
                    f"qapp on hypercorn atomic ≥ {goal:g} × Flask peer atomic",
                    f"{workers} worker(s), redis, {connections} connections",
                    ratio,
                    f"≥ {goal:g}",
                    None if ratio is None else ratio >= goal,
                    _missing(("qapp atomic", ours), ("peer atomic", peer)),
                )
            )
        for connections in (s.connections, s.high_connections):
            if connections and "redis" in s.stores:
                out += _versus(run, workers, connections)
    qapp = [m for m in run.measurements if m.server.startswith("qapp") and m.runs]
    failed = [m for m in qapp if m.failed]
    out.append(
        Target(
            "0 non-2xx (and 0 socket errors, warm-up included) on every qapp route",
            f"{len(qapp)} qapp measurements",
            float(sum(m.failed for m in failed)),
            "= 0",
            None if not qapp else not failed,
            "; ".join(
                f"{m.label} w={m.workers} {m.store} c={m.connections}: "
                + ", ".join(
                    f"{r.statuses} {r.socket_errors} warm-up failed {r.warmup_failed}"
                    for r in m.runs
                    if r.failed
                )
                for m in failed
            ),
        )
    )
    return out
