"""The qapp service: the race lab, user state and a cache, built on qapp's library.

Its blueprints live here, one module a concern; :mod:`qapp.routes` is its URL
map and :func:`qapp.app.create_app` builds it (``qapp.asgi:app`` is the app
that servers run). It uses only the public names of :mod:`qapp.state` and
:mod:`qapp.ext`, as any app adopting the library would.
"""

from __future__ import annotations

from qapp.store.extras import require

# Before any module of the service imports pydantic or quart-schema: without
# the extra, one line that names it rather than a traceback.
require("service", "the demo service")
