"""A default rate limit for every route (``QAPP_RATELIMIT_DEFAULT``), and who is exempt.

A route with a ``@rate_limit`` of its own keeps only its own limits; every
other route counts the default limit per client, each route apart (the
counter's scope is the endpoint). ``@qapp.exempt`` leaves a route out, and
``qapp.exempt_blueprint(bp)`` every route of a blueprint (and of the
blueprints nested in it). The marks are attributes of the view function or
of the blueprint, so nothing of an app lives in this module.
"""

from __future__ import annotations

from typing import TypeVar

from quart import Blueprint, Quart, current_app, request

from qapp.ext.client import client_key
from qapp.ext.ratelimit import LIMITED, check

__all__ = ["EXEMPT", "exempt", "exempt_blueprint", "install"]

#: The attribute that marks a view function or a blueprint as exempt from the default limit.
EXEMPT = "qapp_rate_limit_exempt"

T = TypeVar("T")


def exempt(view: T) -> T:
    """Leave a route out of the default limit: ``@qapp.exempt`` (its own limits still count)."""
    setattr(view, EXEMPT, True)
    return view


def exempt_blueprint(blueprint: Blueprint) -> Blueprint:
    """Leave every route of ``blueprint`` out of the default limit; returns the blueprint."""
    setattr(blueprint, EXEMPT, True)
    return blueprint


def _is_exempt() -> bool:
    """True if the route has limits of its own, is exempt, or is in an exempt blueprint."""
    endpoint = request.endpoint
    view = current_app.view_functions.get(endpoint) if endpoint else None
    if view is None or getattr(view, LIMITED, False) or getattr(view, EXEMPT, False):
        return True
    return any(
        getattr(current_app.blueprints.get(name), EXEMPT, False) for name in request.blueprints
    )


def install(app: Quart, limit: str) -> None:
    """Count ``limit`` per client on every route of ``app`` that is not exempt."""

    @app.before_request
    async def default_rate_limit() -> None:
        if not _is_exempt():
            await check(limit, client_key(), scope=f"qapp.default:{request.endpoint}")
