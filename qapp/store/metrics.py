"""What qapp counts for Prometheus, and the calls that count it: no-ops until switched on.

Any layer may report an event here (the store layer included: this module
imports neither Quart nor, until :func:`enable`, ``prometheus_client``)::

    from qapp.store import metrics
    metrics.cache_event("hit")

Until :func:`enable` runs, every call does nothing and costs one function
call. The Quart extension enables it when ``QAPP_METRICS`` is on (see
:mod:`qapp.ext.metrics`, which also serves ``/metrics``).

Several worker processes, one answer: under ``qapp serve`` each worker
writes its counts to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode), a directory the serving parent
creates before the workers start and removes when it stops, and whichever
worker answers a scrape sums every worker's files, the dead ones' included,
so that no counter ever goes backwards. Without that variable (one process,
or another server) the counts are the answering process's own.

A worker adds its counts up in memory and writes them out once a second
(:func:`flush`), when it stops, and before it answers a scrape: a scrape
shows the other workers' counts as of at most a second ago, and a worker
that crashes takes at most its last second of counts with it.

=============================================  =================================================
metric                                         what
=============================================  =================================================
``qapp_http_requests_total``                   answers, by ``route`` (the URL rule, never the
                                               raw path), ``method`` (one of :data:`METHODS`,
                                               else ``other``) and ``status``
``qapp_http_request_duration_seconds``         time in the app per request, by route and method
``qapp_http_unavailable_total``                503 answers, by ``reason`` (``store_unavailable``,
                                               ``lock_timeout``, ``session_save``)
``qapp_store_operation_duration_seconds``      store calls and their latency, by ``backend``
                                               (the URL scheme), ``op`` and ``outcome``
``qapp_lock_wait_seconds``                     time to take a shared lock, by backend and
                                               ``outcome`` (``acquired`` or ``timeout``)
``qapp_lock_lease_expired_total``              locks whose lease ran out while held, by backend
``qapp_incr_batch_size``                       increments per store call of the coalescer
``qapp_cache_events_total``                    ``cached`` values by ``event``: ``hit``, ``miss``,
                                               ``stale`` (served while refreshed), ``computed``
``qapp_rate_limited_total``                    requests refused by a rate limit, by ``scope``
=============================================  =================================================
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:
    from qapp.store.interface import Store

__all__ = [
    "ENV",
    "METHODS",
    "MULTIPROC_ENV",
    "CacheEvent",
    "Sink",
    "cache_event",
    "enable",
    "enabled",
    "exposition",
    "flush",
    "incr_batch",
    "instrument",
    "lease_expired",
    "lock_wait",
    "rate_limited",
    "request",
    "unavailable",
]

#: The switch: ``QAPP_METRICS=1`` in the environment (or the app's config).
ENV = "QAPP_METRICS"
#: prometheus-client's directory of per-process files (multiprocess mode).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: What a ``cached`` function's value did for one call.
CacheEvent: TypeAlias = Literal["hit", "miss", "stale", "computed"]

#: Seconds: a store call is usually under a millisecond, a request a few.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Increments per coalesced store call.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

#: Seconds between two flushes of a worker's counts (:func:`flush`).
FLUSH_EVERY = 1.0

#: Methods counted under their own name; any other is counted as ``other``, so that
#: invented methods cannot add series without end.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: The store methods :func:`instrument` times.
STORE_OPS = ("get", "set", "add", "delete", "expire", "incr", "ping", "set_fenced")


class Sink:
    """Where events go: this base drops them all; :func:`enable` puts a counting one in place."""

    def request(self, route: str, method: str, status: int | str, seconds: float) -> None:
        """One answered request: its URL rule, method, status and time in the app."""

    def unavailable(self, reason: str) -> None:
        """One 503 answer, and why."""

    def store_op(self, backend: str, op: str, outcome: str, seconds: float) -> None:
        """One store call: backend (URL scheme), operation, ``ok`` or ``error``, latency."""

    def lock_wait(self, backend: str, seconds: float, acquired: bool) -> None:
        """One lock taken (or given up on) after ``seconds`` of waiting."""

    def lease_expired(self, backend: str) -> None:
        """A lock's lease ran out while its holder still held it."""

    def incr_batch(self, size: int) -> None:
        """One coalesced store increment carrying ``size`` callers' increments."""

    def cache(self, event: CacheEvent) -> None:
        """One call of a ``cached`` function: what its value did."""

    def rate_limited(self, scope: str) -> None:
        """One request refused by the rate limit ``scope``."""


_sink = Sink()


def enabled() -> bool:
    """True once :func:`enable` has run in this process."""
    return type(_sink) is not Sink


def request(route: str, method: str, status: int | str, seconds: float) -> None:
    """Count an answered request (the extension calls this).

    The labels are bounded here: a method outside :data:`METHODS` and a
    status outside 100-599 are counted as ``other``. ``route`` must already
    be bounded (a URL rule, not a path).
    """
    if method not in METHODS:
        method = "other"
    if not (isinstance(status, int) and 100 <= status <= 599):
        status = "other"
    _sink.request(route, method, status, seconds)


def unavailable(reason: str) -> None:
    """Count a 503 answer, by why it was given."""
    _sink.unavailable(reason)


def lock_wait(backend: str, seconds: float, acquired: bool) -> None:
    """Count a lock acquisition (or a wait that gave up) and how long it waited."""
    _sink.lock_wait(backend, seconds, acquired)


def lease_expired(backend: str) -> None:
    """Count a lock whose lease ran out while it was held."""
    _sink.lease_expired(backend)


def incr_batch(size: int) -> None:
    """Count one coalesced increment carrying ``size`` increments."""
    _sink.incr_batch(size)


def cache_event(event: CacheEvent) -> None:
    """Count what a ``cached`` call's value did: ``hit``, ``miss``, ``stale`` or ``computed``."""
    _sink.cache(event)


def rate_limited(scope: str) -> None:
    """Count a request refused by the rate limit ``scope``."""
    _sink.rate_limited(scope)


class _Pending:
    """Observations of one histogram child not yet handed to prometheus-client."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        #: Per bucket, the last one ``+Inf``: how many observations fell there.
        self.counts = [0] * (buckets + 1)
        self.total = 0.0


class _Prometheus(Sink):
    """The counting sink: adds up in plain Python, hands the sums to prometheus-client on flush.

    In multiprocess mode every increment of a prometheus-client value takes
    a lock, asks the OS for the process id (a system call) and writes the
    memory-mapped file. Counting each request and its store call that way
    took about a tenth of a worker's CPU at 9,000 requests a second; adding
    up here and handing over the sums once a second (:func:`flush`) does not.
    """

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self._requests = Counter(
            "qapp_http_requests", "HTTP answers", ["route", "method", "status"]
        )
        self._duration = Histogram(
            "qapp_http_request_duration_seconds",
            "Time in the app per request",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
        )
        self._unavailable = Counter("qapp_http_unavailable", "503 answers", ["reason"])
        self._store = Histogram(
            "qapp_store_operation_duration_seconds",
            "Store calls and their latency",
            ["backend", "op", "outcome"],
            buckets=LATENCY_BUCKETS,
        )
        self._lock_wait = Histogram(
            "qapp_lock_wait_seconds",
            "Time to take a shared lock",
            ["backend", "outcome"],
            buckets=LATENCY_BUCKETS,
        )
        self._lease_expired = Counter(
            "qapp_lock_lease_expired", "Locks whose lease ran out while held", ["backend"]
        )
        self._batch = Histogram(
            "qapp_incr_batch_size", "Increments per coalesced store call", buckets=BATCH_BUCKETS
        )
        self._cache = Counter("qapp_cache_events", "Values of cached functions", ["event"])
        self._limited = Counter("qapp_rate_limited", "Requests refused by a rate limit", ["scope"])
        #: Requests by (route, method, status), not yet flushed.
        self._pending_requests: dict[tuple[str, str, str], _Pending] = {}
        #: (histogram, labels) -> observations not yet flushed.
        self._pending: dict[tuple[Any, tuple[str, ...]], _Pending] = {}
        #: (counter, labels) -> amount not yet flushed.
        self._pending_counts: dict[tuple[Any, tuple[str, ...]], float] = {}

    def _observe(
        self, metric: Any, labels: tuple[str, ...], value: float, bounds: tuple[float, ...]
    ) -> None:
        key = (metric, labels)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(len(bounds))
        pending.counts[bisect.bisect_left(bounds, value)] += 1
        pending.total += value

    def _count(self, metric: Any, *labels: str) -> None:
        key = (metric, labels)
        self._pending_counts[key] = self._pending_counts.get(key, 0.0) + 1

    def request(self, route: str, method: str, status: int | str, seconds: float) -> None:
        key = (route, method, str(status))
        pending = self._pending_requests.get(key)
        if pending is None:
            pending = self._pending_requests[key] = _Pending(len(LATENCY_BUCKETS))
        pending.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        pending.total += seconds

    def unavailable(self, reason: str) -> None:
        self._count(self._unavailable, reason)

    def store_op(self, backend: str, op: str, outcome: str, seconds: float) -> None:
        self._observe(self._store, (backend, op, outcome), seconds, LATENCY_BUCKETS)

    def lock_wait(self, backend: str, seconds: float, acquired: bool) -> None:
        outcome = "acquired" if acquired else "timeout"
        self._observe(self._lock_wait, (backend, outcome), seconds, LATENCY_BUCKETS)

    def lease_expired(self, backend: str) -> None:
        self._count(self._lease_expired, backend)

    def incr_batch(self, size: int) -> None:
        self._observe(self._batch, (), size, BATCH_BUCKETS)

    def cache(self, event: CacheEvent) -> None:
        self._count(self._cache, event)

    def rate_limited(self, scope: str) -> None:
        self._count(self._limited, scope)

    def flush(self) -> None:
        """Hand every sum added up since the last flush to prometheus-client."""
        requests, self._pending_requests = self._pending_requests, {}
        for (route, method, status), pending in requests.items():
            self._requests.labels(route, method, status).inc(sum(pending.counts))
            self._add(self._duration.labels(route, method), pending)
        observed, self._pending = self._pending, {}
        for (metric, labels), pending in observed.items():
            self._add(metric.labels(*labels) if labels else metric, pending)
        counted, self._pending_counts = self._pending_counts, {}
        for (metric, labels), amount in counted.items():
            metric.labels(*labels).inc(amount)

    @staticmethod
    def _add(child: Any, pending: _Pending) -> None:
        # prometheus-client's Histogram has no call that adds many
        # observations at once; these are the per-bucket values
        # (non-cumulative, +Inf last) and the sum that observe() increments.
        child._sum.inc(pending.total)
        for bucket, count in zip(child._buckets, pending.counts, strict=True):
            if count:
                bucket.inc(count)


def flush() -> None:
    """Hand this process's counts to prometheus-client now (its files, in multiprocess mode).

    The extension flushes every :data:`FLUSH_EVERY` seconds in each worker,
    when a worker stops serving, and before it answers a scrape.
    """
    if isinstance(_sink, _Prometheus):
        _sink.flush()


def enable() -> None:
    """Start counting in this process (idempotent): imports prometheus-client.

    Under several workers, ``PROMETHEUS_MULTIPROC_DIR`` must already be set
    in the environment when this runs: prometheus-client chooses its storage
    then. ``qapp serve`` sets it for its workers.
    """
    global _sink
    if not enabled():
        _sink = _Prometheus()


def exposition() -> tuple[bytes, str]:
    """Every count in Prometheus's text format, summed over the workers; and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    flush()
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _timed(name: str, backend: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        outcome = "error"
        try:
            result = await call(*args, **kwargs)
            outcome = "ok"
            return result
        finally:
            _sink.store_op(backend, name, outcome, time.perf_counter() - began)

    timed.__name__ = name
    timed.__doc__ = call.__doc__
    return timed


def instrument(store: Store) -> Store:
    """Time ``store``'s calls (and its namespaces', which call it) while metrics are on.

    A no-op unless :func:`enable` has run; returns ``store`` itself.
    """
    if enabled() and not getattr(store, "_qapp_metered", False):
        for name in STORE_OPS:
            setattr(store, name, _timed(name, store.scheme, getattr(store, name)))
        store._qapp_metered = True  # type: ignore[attr-defined]
    return store
