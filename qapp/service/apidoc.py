"""The published OpenAPI document (``/openapi.json``): answers, errors and path rules.

quart-schema builds the document from the routes. Left alone, it listed no
answers at all and described every path parameter as any string, so a
client (or schemathesis) could not tell a right answer from a wrong one.
This module fills the gaps:

- routes name their answers with :func:`document_response` and the
  models here (:class:`NoContent` for a 204, :class:`HTMLPage` for the page);
- :func:`path_parameter` gives a path parameter its real schema (a key's
  pattern, a strategy's names), registered by the module that owns the rule;
- :class:`Provider` adds the error answers that every operation can give,
  because the hooks that give them run before any route: 400 for a body
  declared JSON that is not, 413 for a body over the limit, 403 (another
  site's request), 408 (a body too slow) and 415 (not JSON) on
  POST/PUT/PATCH/DELETE, 429 over a rate limit or the session quota, 503
  when a store is down (a session cookie is read from the store on every
  route), and 404 where a path parameter can name nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from quart import Quart
from quart_schema import document_response
from quart_schema.openapi import OpenAPIProvider
from werkzeug.routing import Rule
from werkzeug.routing.converters import BaseConverter

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "ErrorAnswer",
    "HTMLPage",
    "NoContent",
    "Provider",
    "document_response",
    "errors",
    "path_parameter",
]


class ErrorAnswer(BaseModel):
    """An error: a short code and a message for people."""

    model_config = ConfigDict(extra="forbid")

    error: str
    message: str


class NoContent:
    """No body (204)."""


class HTMLPage:
    """An HTML page."""


#: Where an app keeps its path parameters' schemas, in ``app.extensions``.
PATH_SCHEMAS = "qapp.apidoc.path_schemas"

#: Status -> what it means, for the error answers documented on every operation.
_ERRORS = {
    400: "Bad input: a key, query or body outside the API's limits, or a body that is not JSON",
    401: "Not logged in, or wrong credentials",
    404: "Nothing here: no such strategy, key or path",
    409: "Taken",
    413: "Request body over 64 KiB",
    403: "A state-changing request that another site's page made the browser send",
    408: "The request body did not arrive in time",
    415: "A body on POST, PUT, PATCH or DELETE that is not declared JSON",
    429: "Over a rate limit or quota; retry after Retry-After seconds",
    503: "A store cannot be reached (or is busy); retry after Retry-After seconds",
}

_BODY_METHODS = frozenset({"post", "put", "patch", "delete"})


def path_parameter(app: Quart, name: str, schema: dict[str, Any]) -> None:
    """Publish ``schema`` as the schema of every path parameter of ``app`` called ``name``."""
    app.extensions.setdefault(PATH_SCHEMAS, {})[name] = schema


#: Where :func:`errors` keeps a route's own error statuses.
_ERRORS_ATTRIBUTE = "_qapp_error_statuses"


def errors(*statuses: int) -> Callable[[F], F]:
    """Document the route's own error answers ``statuses``, in the JSON error shape."""

    def decorator(func: F) -> F:
        setattr(func, _ERRORS_ATTRIBUTE, (*getattr(func, _ERRORS_ATTRIBUTE, ()), *statuses))
        return func

    return decorator


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": _ERRORS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorAnswer"}}},
    }


class Provider(OpenAPIProvider):
    """quart-schema's document builder, plus qapp's path rules and common error answers."""

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        schemas = self._app.extensions.get(PATH_SCHEMAS, {})
        if name in schemas:
            parameter["schema"] = dict(schemas[name])
        return parameter

    def build_response_object(
        self, model: Any, headers_model: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is NoContent:
            return {"description": "No content"}, {}
        if model is HTMLPage:
            return {"description": "An HTML page", "content": {"text/html": {}}}, {}
        return super().build_response_object(model, headers_model)

    def build_request_body(self, model: Any, source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        body, components = super().build_request_body(model, source)
        # Every body qapp documents is one its route cannot do without.
        body["required"] = True
        return body, components

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        components["ErrorAnswer"] = ErrorAnswer.model_json_schema()
        own = getattr(self._app.view_functions[rule.endpoint], _ERRORS_ATTRIBUTE, ())
        for operations in paths.values():
            for method, operation in operations.items():
                # quart-schema shares one dict between the methods of a rule.
                responses = operation["responses"] = dict(operation["responses"])
                # 429: any answer may start a session, and new sessions have a quota.
                statuses = [*own, 400, 413, 429, 503]
                if method in _BODY_METHODS:
                    statuses += [403, 408, 415]
                if rule.arguments:
                    statuses.append(404)
                for status in statuses:
                    responses.setdefault(status, _error_response(status))
        return paths, components
