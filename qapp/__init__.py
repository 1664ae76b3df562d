"""qapp: where state lives in an async Python web app.

Four layers, each importing only the ones above it in this list:

- :mod:`qapp.state` (front door) and :mod:`qapp.store`: the store API, with no web
  framework (``import qapp.state`` loads no Quart);
- :mod:`qapp.ext`: the Quart extension, :class:`~qapp.ext.Qapp`: stores per
  worker, server-side sessions, ``g.user`` and :func:`~qapp.ext.login_required`;
- :mod:`qapp.service`: the demo service and race lab, built on the two above
  (``qapp.routes`` is its URL map, :func:`create_app` in :mod:`qapp.app` builds it);
- serving and tools: ``qapp serve`` (:mod:`qapp.server`), ``qapp race``
  (:mod:`qapp.tools`) and :mod:`qapp.testing`.

The names below are loaded on first use, so that importing the store API
alone never pulls in Quart.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qapp.app import create_app
    from qapp.ext import Qapp, login_required

__all__ = ["Qapp", "create_app", "login_required"]

_LAZY = {
    "Qapp": "qapp.ext",
    "login_required": "qapp.ext",
    "create_app": "qapp.app",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qapp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
