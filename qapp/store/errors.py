"""The store API's errors: the project's own, with a driver's exception kept as ``__cause__``.

::

    QappError
    ├── ConfigurationError      bad or unknown store URL, raised at startup
    └── StoreError
        ├── StoreUnavailable    the backend cannot be reached now (HTTP 503)
        ├── LockTimeout         a lock was not acquired within its wait
        ├── StaleLease          a fenced write of a holder that was superseded
        └── InvalidValue        not JSON, or ``incr`` on a non-integer

A missing key is ``None``, never an exception.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InvalidValue",
    "LockTimeout",
    "QappError",
    "StaleLease",
    "StoreError",
    "StoreUnavailable",
]


class QappError(Exception):
    """Base of every error qapp raises on purpose."""


class ConfigurationError(QappError):
    """The configuration cannot work, e.g. a store URL with an unknown scheme."""


class StoreError(QappError):
    """Base of the errors a store raises."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now; the caller may retry later."""


class LockTimeout(StoreError):
    """A lock was not acquired within the time the caller was willing to wait."""


class StaleLease(StoreError):
    """A write fenced by a lock was refused: the lease no longer holds that lock.

    The holder's lease ran out (it was paused, or too slow), and someone else
    may have taken the lock: what it meant to write could overwrite the newer
    holder's. A write after the lock was released is refused the same way.
    """


class InvalidValue(StoreError, ValueError):
    """A value that is not JSON, or an increment of a value that is not an integer."""
