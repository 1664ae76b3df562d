"""qapp: where state lives in an async Python web app.

``create_app`` builds the Quart service; :mod:`qapp.state` is the state
layer (one async Store over memory, SQLite and Redis) that it stands on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from quart import Quart

from qapp import (
    auth,
    cache,
    config,
    errors,
    memo,
    race,
    routes,
    session_counter,
    sessions,
    state,
    validation,
)

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
    state.init_app(app)
    # Bad bodies are refused before the session hook reads any store.
    validation.init_app(app)
    sessions.init_app(app)
    app.register_blueprint(routes.bp)
    app.register_blueprint(race.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(session_counter.bp)
    app.register_blueprint(cache.bp)
    app.register_blueprint(memo.bp)
    return app
