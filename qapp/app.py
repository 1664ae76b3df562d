"""The service's app factory: ``create_app()`` builds the demo service on qapp's library.

It sits above :mod:`qapp.routes` (the URL map) and :mod:`qapp.service` (the
blueprints), so the layers import downwards only; ``qapp.asgi:app`` is the
app it builds for servers.
"""

from __future__ import annotations

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
    """Build the app from ``test_config`` and the ``QAPP_*`` variables (the mapping wins).

    Nothing connects here. Each hypercorn worker builds its own app and opens
    its stores in ``before_serving``, inside its own event loop.

    Raises:
        ConfigurationError: a store URL is malformed or names no known backend.
    """
    settings = config.resolve(test_config)
    # Named for its package, whose folder holds the page's static files and templates.
    app = Quart("qapp.service", instance_path=settings["QAPP_INSTANCE_PATH"])
    app.config.update(settings)
    # Answers keep the order their routes built them in.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logging.getLogger("qapp").setLevel(logging.INFO)

    errors.init_app(app)
    # Bad bodies are refused before the session hook reads any store.
    validation.init_app(app)
    # Store URLs, sessions and the secret key: the extension reads them from app.config.
    qapp = Qapp(app, session_values=[COUNTER, lab.SESSION_VALUE])
    qapp.user_loader(auth.load_user)
    routes.register(app)
    return app
