"""The shared cache: JSON values that survive requests and are seen by every worker.

``PUT /cache/<key>?ttl=S`` stores the body (any JSON value, ``null``
included) for ``S`` seconds (fractions allowed; no ``ttl``: the longest a
cache entry may live, ``CACHE_MAX_TTL``, a day by default, so that every
entry expires);
``GET`` answers ``{"key", "value"}``; ``DELETE`` removes it. Values live in
the ``cache`` namespace of the cache store, so they are
shared by all workers of a host (SQLite) or of every host (Redis).

Each value is kept wrapped as ``{"value": v}``: a bare ``null`` would be
indistinguishable from a missing key.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, RootModel
from quart import Blueprint, current_app
from quart_schema import document_request, validate_querystring

from qapp.ext import client_key, get_store
from qapp.service.apidoc import NoContent, document_response
from qapp.service.errors import APIError
from qapp.service.limits import throttle
from qapp.service.validation import TTL, check_key, json_body
from qapp.state import JSONValue, Store

bp = Blueprint("cache", __name__, url_prefix="/cache")


class CacheQuery(BaseModel):
    """``PUT``'s query string: an optional ttl in seconds."""

    ttl: TTL | None = None


class CacheValue(RootModel[Any]):
    """Any JSON value, ``null`` included."""


class CacheItem(BaseModel):
    """A cached value and its key."""

    key: str
    value: Any


def _cache() -> Store:
    return get_store("cache").namespace("cache")


def _not_found(key: str) -> APIError:
    return APIError(404, "not_found", f"no cached value for key {key!r}")


# ``path`` so that a key with a slash is a 400 (bad key), not a 404.
@bp.put("/<path:key>")
@validate_querystring(CacheQuery)
@document_request(CacheValue)
@document_response(NoContent, 204)
async def put(key: str, query_args: CacheQuery) -> tuple[str, int]:
    """Store the body at ``key`` for everyone, for ``ttl`` seconds if given."""
    check_key(key)
    value = await json_body()
    longest = float(current_app.config["QAPP_CACHE_MAX_TTL"])
    if query_args.ttl is not None and query_args.ttl > longest:
        raise APIError(400, "invalid_query", f"ttl: at most {longest:g} seconds")
    # Counted last, so that a request refused for its input costs no quota.
    await throttle("CACHE_QUOTA", client_key(), "cache-write")
    await _cache().set(key, {"value": value}, ttl=query_args.ttl or longest)
    return "", 204


@bp.get("/<path:key>")
@document_response(CacheItem, 200)
async def get(key: str) -> dict[str, JSONValue]:
    """The value at ``key``, or 404 if it is absent, deleted or expired."""
    item = await _cache().get(check_key(key))
    if not isinstance(item, dict):
        raise _not_found(key)
    return {"key": key, "value": item.get("value")}


@bp.delete("/<path:key>")
@document_response(NoContent, 204)
async def delete(key: str) -> tuple[str, int]:
    """Remove ``key``: 204, or 404 if there was nothing to remove."""
    if not await _cache().delete(check_key(key)):
        raise _not_found(key)
    return "", 204
