"""The qapp service: the race lab, user state and a cache, built on qapp's library.

``create_app`` builds it; ``qapp.asgi:app`` is the app that servers run,
and :mod:`qapp.routes` is its URL map. It uses only the public names of
:mod:`qapp.state` and :mod:`qapp.ext`, as any app adopting the library would.
"""

from __future__ import annotations

from qapp.extras import require

# Before any module of the service imports pydantic or quart-schema: without
# the extra, one line that names it rather than a traceback.
require("service", "the demo service")

import logging
from collections.abc import Mapping
from typing import Any

from quart import Quart

from qapp import routes
from qapp.ext import Qapp
from qapp.service import auth, config, errors, lab, validation
from qapp.service.session_counter import COUNTER

__all__ = ["create_app"]


def create_app(test_config: Mapping[str, Any] | None = None) -> Quart:
    """Build the app: defaults, then ``QAPP_*`` variables, then ``test_config``.

    Nothing connects here. Each hypercorn worker builds its own app and opens
    its stores in ``before_serving``, inside its own event loop.

    Raises:
        ConfigurationError: a store URL is malformed or names no known backend.
    """
    settings = config.resolve(test_config)
    app = Quart(__name__, instance_path=settings["INSTANCE_PATH"])
    app.config.update(settings)
    # Answers keep the order their routes built them in.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logging.getLogger("qapp").setLevel(logging.INFO)

    errors.init_app(app)
    stores = {
        "default": settings["STORE_URL"],
        "session": settings["SESSION_STORE_URL"],
        "cache": settings["CACHE_STORE_URL"],
    }
    # Bad bodies are refused before the session hook reads any store.
    validation.init_app(app)
    qapp = Qapp(
        app,
        stores=stores,
        session_ttl=settings.get("SESSION_TTL"),
        session_values=[COUNTER, lab.SESSION_VALUE],
    )
    qapp.user_loader(auth.load_user)
    routes.register(app)
    return app
