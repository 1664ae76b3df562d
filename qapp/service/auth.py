"""Per-request auth: users in the main store, the logged-in name in the session, ``g.user``.

``POST /auth/register`` creates a user (201, or 409 if the name is taken),
``POST /auth/login`` logs in (200 and a new session id), ``POST
/auth/logout`` ends the session (204) and ``GET /auth/me`` answers
``{"username"}`` for the logged-in user (401 otherwise).

Three kinds of state meet here, each in its home:

- the user record (name and password hash) is shared state: ``<name>`` in
  the ``user`` namespace of the default store, claimed with the atomic
  ``add``, so two concurrent registrations of one name give exactly one 201;
  a claimed name without a hash yet logs nobody in;
- who is logged in is user state: the name in the server-side session
  (:func:`qapp.ext.login_user`);
- the user of *this* request is request state: ``g.user``, loaded once per
  request by :func:`load_user`, the app's ``user_loader``, and gone with
  the request.

Passwords are hashed with werkzeug.security (scrypt), in a thread, so
that hashing does not stall the worker's other requests. An unknown user
and a wrong password get the same 401 after the same work: an unknown name
is checked against a dummy hash, so timing does not tell them apart.

A login passes three limits (settings in :mod:`qapp.service.config`), all
before the password is checked, so that a refused attempt costs no hash
and says nothing about the password:

- ``LOGIN_CLIENT_LIMIT``, per client address over every account: every
  attempt counts, so a flood of logins from one address is refused cheaply;
- ``LOGIN_LIMIT``, per account *and* client address: a stranger's guesses
  spend the stranger's budget for that account, not the owner's;
- ``LOGIN_ACCOUNT_LIMIT``, per account over every address, higher: the
  ceiling for guesses spread over many addresses. Once it is spent the
  owner is refused too, until its window ends; that is the trade-off.

The last two count attempts that did not succeed: each attempt is counted
before the password is checked, so concurrent guesses cannot slip in before
the first failure is counted, and a login that succeeds is given back. A
refused attempt stays counted: retrying early gains nothing. These counters
are the one thing a refused request changes in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, current_app, g
from quart.blueprints import BlueprintSetupState
from quart_schema import validate_request
from werkzeug.security import check_password_hash, generate_password_hash

from qapp.ext import (
    client_key,
    get_store,
    login_required,
    login_user,
    logout_user,
)
from qapp.service.apidoc import NoContent, document_response, errors
from qapp.service.errors import APIError
from qapp.service.limits import give_back, lockout_risk, throttle
from qapp.state import Store

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__, url_prefix="/auth")

#: Seconds a name stays claimed by a registration that has not finished hashing.
CLAIM_TTL = 30.0
#: Seconds a login or registration waits for a free hashing slot before a 503.
HASH_WAIT = 2.0
#: Where each worker keeps its hashing slots and threads, in ``app.extensions``.
HASH_SLOTS = "qapp.auth.hash_slots"
HASH_THREADS = "qapp.auth.hash_threads"
#: How much lower than the event loop the hashing threads run (a nice value).
HASH_NICENESS = 10

R = TypeVar("R")


class Credentials(BaseModel):
    """A username and password, as register and login take them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    username: Annotated[str, Field(pattern=r"^[a-z0-9_]{3,32}$")]
    password: Annotated[str, Field(min_length=8, max_length=128)]


class UserAnswer(BaseModel):
    """A user's name."""

    username: str


@dataclass(frozen=True)
class User:
    """The user of the current request, as ``g.user`` holds it."""

    username: str


def users() -> Store:
    """Where user records live: the ``user`` namespace of the default store."""
    return get_store().namespace("user")


@functools.cache
def _dummy_hash() -> str:
    # Same algorithm and cost as real hashes; made once per worker.
    return generate_password_hash(secrets.token_urlsafe(16))


def _password_matches(stored: str | None, password: str) -> bool:
    """Check ``password``; with no user (``stored`` None) check a dummy, and fail."""
    if stored is None:
        check_password_hash(_dummy_hash(), password)
        return False
    return check_password_hash(stored, password)


@bp.record_once
def check_login_limits(state: BlueprintSetupState) -> None:
    """Read the login limits when the app is built: a bad one fails then, naming its setting.

    Warns if one client alone could spend an account's ceiling.
    """
    warning = lockout_risk(state.app.config)
    if warning:
        log.warning("%s", warning)


@bp.before_app_serving
async def warm_dummy_hash() -> None:
    """Make the dummy hash at startup, so the first unknown login costs no more than others.

    Also give this worker its hashing slots: scrypt takes tens of
    milliseconds of CPU and 32 MiB per hash, so a flood of logins must
    queue briefly or be refused, not run all at once.
    """
    slots = int(current_app.config["QAPP_HASH_CONCURRENCY"])
    current_app.extensions[HASH_SLOTS] = asyncio.Semaphore(slots)
    current_app.extensions[HASH_THREADS] = ThreadPoolExecutor(
        slots, thread_name_prefix="qapp-hash", initializer=_yield_cpu
    )
    await _hash_work(_dummy_hash)


@bp.after_app_serving
async def stop_hash_threads() -> None:
    """Let this worker's hashing threads finish and go."""
    current_app.extensions.pop(HASH_THREADS).shutdown(wait=True)


def _yield_cpu() -> None:
    """Run this hashing thread at a lower CPU priority than the event loop.

    scrypt keeps a core busy for tens of milliseconds per hash. At equal
    priority a flood of logins left the kernel sharing the cores evenly
    between hashes and event loops, and /health waited half a second; at
    nice 10 the loops come first and hashing uses what they leave.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)


async def _hash_work(func: Callable[..., R], *args: str | None) -> R:
    """Run ``func`` (a password hash or check) in a thread, a few at a time per worker."""
    slots: asyncio.Semaphore = current_app.extensions[HASH_SLOTS]
    try:
        async with asyncio.timeout(HASH_WAIT):
            await slots.acquire()
    except TimeoutError:
        raise APIError(503, "busy", "too many password checks at once; retry soon") from None
    try:
        threads: ThreadPoolExecutor = current_app.extensions[HASH_THREADS]
        return await asyncio.get_running_loop().run_in_executor(threads, func, *args)
    finally:
        slots.release()


async def load_user(username: str) -> User | None:
    """The app's user loader: the user named, if the record exists and is complete."""
    record = await users().get(username)
    if isinstance(record, dict) and "password_hash" in record:
        return User(username)
    return None


def _taken(username: str) -> APIError:
    return APIError(409, "username_taken", f"the username {username!r} is taken")


@bp.post("/register")
@validate_request(Credentials)
@document_response(UserAnswer, 201)
@errors(409)
async def register(data: Credentials) -> tuple[dict[str, str], int]:
    """Create a user; exactly one of several concurrent registrations of a name wins."""
    await throttle("REGISTER_CLIENT_LIMIT", client_key(), "register-client")
    store = users()
    key = data.username
    # Claim the name first with the atomic add, then hash: losers of a race
    # answer at once instead of each paying for a hash. The claim expires, so
    # a worker that dies while hashing does not hold the name for ever.
    if not await store.add(key, {"username": data.username}, ttl=CLAIM_TTL):
        raise _taken(data.username)
    try:
        # The claim must still be ours when the record lands: a hash delayed
        # past the claim's ttl (a thread pool backed up) would overwrite the
        # user of a later registration. Give up in good time instead.
        async with asyncio.timeout(CLAIM_TTL / 2):
            hashed = await _hash_work(generate_password_hash, data.password)
        await store.set(key, {"username": data.username, "password_hash": hashed})
    except TimeoutError:
        await asyncio.shield(store.delete(key))
        raise APIError(503, "busy", "too busy to register now; retry soon") from None
    except BaseException:
        await asyncio.shield(store.delete(key))
        raise
    return {"username": data.username}, 201


@bp.post("/login")
@validate_request(Credentials)
@document_response(UserAnswer, 200)
@errors(401)
async def login(data: Credentials) -> dict[str, str]:
    """Log in: same 401 for unknown user and wrong password; a new session id on success."""
    # Counted before the password is checked: a refused guess costs no hash
    # and tells nothing.
    client = client_key()
    await throttle("LOGIN_CLIENT_LIMIT", client, "login-client")
    # The pair first: a client that spent its budget for this account is
    # refused before it adds to the account's ceiling. "@" cannot be in a
    # username, so the key names one (account, client) pair.
    pair = await throttle("LOGIN_LIMIT", f"{data.username}@{client}", "login-pair")
    account = await throttle("LOGIN_ACCOUNT_LIMIT", data.username, "login-account")
    record = await users().get(data.username)
    stored = record.get("password_hash") if isinstance(record, dict) else None
    if not await _hash_work(_password_matches, stored, data.password):
        raise APIError(401, "invalid_credentials", "unknown username or wrong password")
    # Only attempts that fail count against the account: the owner's own
    # logins never bring the account nearer its ceiling.
    await give_back(pair, account)
    # A new id, written with the user in it: an id known before login is
    # worthless. If the store fails midway, nothing of the login is kept.
    await login_user(data.username)
    return {"username": data.username}


@bp.post("/logout")
@document_response(NoContent, 204)
async def logout() -> tuple[str, int]:
    """End the session: deleted from the store, so a replayed cookie is dead."""
    await logout_user()
    return "", 204


@bp.get("/me")
@document_response(UserAnswer, 200)
@errors(401)
@login_required
async def me() -> dict[str, str]:
    """The logged-in user, from ``g.user``."""
    user: User = g.user
    return {"username": user.username}
