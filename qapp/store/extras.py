"""qapp's optional features and the extra that installs each: one line, not a traceback, if missing.

``pip install qapp`` is the library on its own: Quart, aiosqlite and
hypercorn, enough for the ``sqlite://`` and ``memory://`` stores, the Quart
extension and ``qapp serve --app``. Everything else is an extra:

============  ==============================================  =====================================
extra         installs                                        for
============  ==============================================  =====================================
``redis``     redis                                           ``redis://`` and its Sentinel and
                                                              Cluster stores
``postgres``  asyncpg                                         ``postgresql://`` stores
``metrics``   prometheus-client                               ``QAPP_METRICS=1`` (``/metrics``)
``fast``      granian, uvloop                                 ``qapp serve --server granian``
``service``   quart-schema[pydantic], swagger-ui-py           the demo service (``qapp serve``
                                                              without ``--app``) and its ``/docs``
``lab``       httpx, rich (and ``service``)                   ``qapp race``; ``race()`` and
                                                              ``fire()`` of :mod:`qapp.testing`
``typed``     msgspec                                         ``cached(..., codec="typed")``
``all``       every extra above
============  ==============================================  =====================================

A feature whose extra is missing raises :class:`MissingExtra` (a
:class:`~qapp.state.ConfigurationError`) where it is first asked for, at
startup, with the one line to fix it::

    the redis:// store needs the 'redis' extra: pip install 'qapp[redis]'

This module imports nothing but the store layer's errors: it only asks
whether a module could be imported (:func:`importlib.util.find_spec`).
"""

from __future__ import annotations

import importlib.util

from qapp.store.errors import ConfigurationError

__all__ = ["EXTRAS", "MissingExtra", "extra_of", "installed", "require"]

#: Each extra and the top-level modules (import names) it installs. ``fast``
#: is granian alone here: uvloop is optional even there (granian then runs
#: asyncio's loop), and ``lab`` races the demo service, so it brings
#: ``service`` too.
EXTRAS: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "postgres": ("asyncpg",),
    "metrics": ("prometheus_client",),
    "fast": ("granian",),
    "service": ("quart_schema", "pydantic", "swagger_ui"),
    "lab": ("httpx", "rich", "quart_schema", "pydantic", "swagger_ui"),
    "typed": ("msgspec",),
}


class MissingExtra(ConfigurationError):
    """A feature was asked for whose extra is not installed; the message says how to install it."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the {extra!r} extra: pip install 'qapp[{extra}]'")
        #: What was asked for, e.g. "the redis:// store".
        self.feature = feature
        #: The extra that installs it.
        self.extra = extra


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def installed(extra: str, *modules: str) -> bool:
    """True if ``modules`` (by default every module of ``extra``) can be imported."""
    return all(_importable(module) for module in modules or EXTRAS[extra])


def require(extra: str, feature: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` for ``feature`` unless ``extra`` is installed.

    ``modules`` narrows the check to what ``feature`` imports (default: the
    extra's every module).
    """
    if not installed(extra, *modules):
        raise MissingExtra(feature, extra)


def extra_of(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name: its top level counts), or None."""
    top = (module or "").partition(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)
