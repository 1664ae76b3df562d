"""The store API: one async key-value Store, a home for state at every scale.

This module is the front door of qapp's state library. It needs no web
framework (``import qapp.state`` loads no Quart) and works in any asyncio
program::

    store = await open_store("sqlite:///var/qapp.db")
    await store.incr("hits")                       # atomic for every sharer
    cache = store.namespace("cache")               # keys cannot collide

A store is chosen by URL and keeps the same promises on every backend, each
in its own module under :mod:`qapp.store.backends`, imported only when its URL is
used (so ``memory://`` never imports a driver):

=================  ================================  ======================================
URL                backend                           who shares the data
=================  ================================  ======================================
memory://          ``qapp.store.backends.memory``          the coroutines of this process only
sqlite:///p        ``qapp.store.backends.sqlite``          every worker process on this host
redis://h/0        ``qapp.store.backends.redis``           every worker on every host
redis+sentinel://  ``qapp.store.backends.redis_sentinel``  every host; Sentinel fails over
redis+cluster://   ``qapp.store.backends.redis_cluster``   every host; keys sharded over masters
postgresql://      ``qapp.store.backends.postgres``        every worker on every host
=================  ================================  ======================================

A new backend is one module with a :class:`Store` subclass and one line in
:data:`BACKENDS`.

Values are JSON and nothing is ever pickled. ``ttl`` is a number of seconds
(fractions allowed) everywhere, and an expired key is never returned.
``incr`` and ``add`` are atomic for everyone sharing the store, and ``lock``
gives mutual exclusion to the same set of sharers; ``lease`` is the same lock
with a handle to renew its lease while long work runs. ``notify`` wakes the
sharers that ``listen`` for a name, so that a waiter need not poll.

Every lock a holder takes comes with a *fencing token*, strictly increasing
per lock name, and :meth:`Store.set_fenced` (or ``lease.set``) writes only
while that lease still holds the lock: a holder that was paused past its
lease (a GC pause, SIGSTOP) cannot overwrite what the next holder wrote::

    async with store.lock("report", timeout=5) as lease:
        await lease.set("report", build())    # StaleLease if superseded

Errors are the project's own (:mod:`qapp.store.errors` draws their tree); a
driver's exception is kept as ``__cause__``, and a missing key is ``None``,
never an exception.

The store layer lives in :mod:`qapp.store`, one module a concept: the
interface (:mod:`~qapp.store.interface`), its errors and values, leases,
URLs, the backends (:mod:`qapp.store.backends`), ``cached``
(:mod:`~qapp.store.flight`), the rate limiter and the metrics. This module
gathers the names a user needs.
"""

from __future__ import annotations

from qapp.store.errors import (
    ConfigurationError,
    InvalidValue,
    LockTimeout,
    QappError,
    StaleLease,
    StoreError,
    StoreUnavailable,
)
from qapp.store.interface import Namespace, Store, check_namespace
from qapp.store.lease import Lease, Wakeup
from qapp.store.urls import BACKENDS, open_store, redact, store_from_url
from qapp.store.values import (
    JSONValue,
    Scope,
    check_delta,
    check_ttl,
    dumps,
    lease_and_wait,
    loads,
)

__all__ = [
    "BACKENDS",
    "ConfigurationError",
    "InvalidValue",
    "JSONValue",
    "Lease",
    "LockTimeout",
    "Namespace",
    "QappError",
    "Scope",
    "StaleLease",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Wakeup",
    "check_delta",
    "check_namespace",
    "check_ttl",
    "dumps",
    "lease_and_wait",
    "loads",
    "open_store",
    "redact",
    "store_from_url",
]
