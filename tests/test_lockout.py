"""Login limits that a stranger cannot turn against the owner of an account.

The app trusts 127.0.0.1, the test client's address, as a proxy, so each
request plays a client of its own by its ``X-Forwarded-For`` address (one
address per header, from the documentation range 2001:db8::/32). Users are
stored with a one-round hash, so that a guess costs nothing: what is tested
is what the limits count, not scrypt.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from quart import Quart
from werkzeug.security import generate_password_hash

from qapp import create_app
from qapp.ext import get_store
from qapp.service.config import SERVICE_SETTINGS
from qapp.service.limits import lockout_risk, one_client_share
from qapp.state import ConfigurationError, Store
from qapp.store.ratelimit import Limit, hit, refund
from qapp.testing import HypercornServer
from tests.storedump import assert_json_error

#: The in-process tests run on SQLite and on Redis.
ON_STORES = pytest.mark.parametrize("store_url", ["sqlite", "redis"], indirect=True)

OWNER = {"username": "ada", "password": "analytical engine"}
#: The default ceiling: failed logins per account per quarter hour, over every address.
CEILING = 50
#: The default budget of one address at one account per quarter hour.
PER_PAIR = 5

_addresses = itertools.count(1)


def address() -> dict[str, str]:
    """Headers of a client address no other request in this run uses."""
    # One /64 each: IPv6 clients are keyed by network.
    return {"X-Forwarded-For": f"2001:db8:{next(_addresses):x}::1"}


def wrong(n: int = 0, username: str = "ada") -> dict[str, str]:
    return {"username": username, "password": f"wrong guess {n:04d}"}


@pytest.fixture
def app(store_url: str, tmp_path: Path) -> Quart:
    """The service with its default limits, behind a proxy at 127.0.0.1."""
    return create_app(
        {
            "STORE_URL": store_url,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "TRUSTED_PROXIES": "127.0.0.1",
        }
    )


async def add_user(app: Quart, username: str, password: str) -> None:
    """Store a user with a one-round hash (cheap to check, same code path)."""
    record = {
        "username": username,
        "password_hash": generate_password_hash(password, "pbkdf2:sha256:1"),
    }
    async with app.app_context():
        await get_store().set(f"user:{username}", record)


async def clear_of_a_boundary(period: float, room: float) -> None:
    """Wait, if need be, until ``room`` seconds of the current window of ``period`` remain."""
    left = period - time.time() % period
    if left < room:
        await asyncio.sleep(left + 0.05)


async def statuses(
    client: httpx.AsyncClient, bodies: list[dict[str, str]], headers: dict[str, str] | None = None
) -> list[int]:
    """POST each body to /auth/login in turn, from ``headers``' address (a new one each if None)."""
    answers = []
    for body in bodies:
        response = await client.post("/auth/login", json=body, headers=headers or address())
        answers.append(response.status_code)
    return answers


@ON_STORES
async def test_a_strangers_guesses_leave_the_owner_able_to_log_in(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """60 wrong guesses from one address (more than the account's ceiling): the owner,
    from another address, still logs in."""
    await add_user(app, **OWNER)
    await clear_of_a_boundary(900, room=30)
    stranger = address()
    got = await statuses(client, [wrong(n) for n in range(60)], stranger)
    assert got == [401] * PER_PAIR + [429] * (60 - PER_PAIR)
    owner = await client.post("/auth/login", json=OWNER, headers=address())
    assert owner.status_code == 200
    assert (await client.get("/auth/me")).json() == {"username": "ada"}


@ON_STORES
async def test_the_stranger_is_refused_with_retry_after_even_for_the_right_password(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """Past its budget for the account, the stranger's address gets a JSON 429 with
    Retry-After, whether the password is wrong or right: no oracle."""
    await add_user(app, **OWNER)
    await clear_of_a_boundary(900, room=30)
    stranger = address()
    assert await statuses(client, [wrong(n) for n in range(PER_PAIR)], stranger) == [401] * 5
    for body in (wrong(99), OWNER):
        refused = await client.post("/auth/login", json=body, headers=stranger)
        assert_json_error(refused, 429, "too_many_requests")
        assert 1 <= int(refused.headers["Retry-After"]) <= 900
        assert "set-cookie" not in refused.headers


@ON_STORES
async def test_guesses_from_many_addresses_meet_the_account_ceiling(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """50 addresses guessing once each spend the account's ceiling: the 51st address, and
    then the owner too, get 429 for that account; another account is untouched."""
    await add_user(app, **OWNER)
    await add_user(app, "bob", "bob's password")
    await clear_of_a_boundary(900, room=30)
    assert await statuses(client, [wrong(n) for n in range(CEILING)]) == [401] * CEILING
    assert_json_error(await client.post("/auth/login", json=wrong(CEILING), headers=address()), 429)
    # The trade-off: a distributed attack past the ceiling locks the owner out
    # of this account until the window ends.
    assert (await client.post("/auth/login", json=OWNER, headers=address())).status_code == 429
    bob = {"username": "bob", "password": "bob's password"}
    assert (await client.post("/auth/login", json=bob, headers=address())).status_code == 200


@ON_STORES
async def test_successful_logins_use_up_no_login_limit(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """The owner logs in 8 times from one address and once from each of 55 more (past both
    the per-address budget and the ceiling): every one is a 200."""
    await add_user(app, **OWNER)
    await clear_of_a_boundary(900, room=30)
    home = address()
    assert await statuses(client, [OWNER] * 8, home) == [200] * 8
    assert await statuses(client, [OWNER] * (CEILING + 5)) == [200] * (CEILING + 5)


@ON_STORES
async def test_one_address_meets_its_limit_over_all_accounts(
    client: httpx.AsyncClient, app: Quart
) -> None:
    """One address guessing once at each of 31 accounts gets 30 answers, then a 429."""
    for n in range(31):
        await add_user(app, f"user{n:02d}", "right password")
    await clear_of_a_boundary(60, room=15)
    bodies = [wrong(n, f"user{n:02d}") for n in range(31)]
    assert await statuses(client, bodies, address()) == [401] * 30 + [429]


@ON_STORES
@pytest.mark.parametrize(
    ("setting", "plan"),
    [
        ("LOGIN_LIMIT", "one address, one account"),
        ("LOGIN_ACCOUNT_LIMIT", "many addresses, one account"),
        ("LOGIN_CLIENT_LIMIT", "one address, many accounts"),
    ],
)
async def test_each_login_limit_can_be_turned_off(
    client: httpx.AsyncClient, app: Quart, setting: str, plan: str
) -> None:
    """With one login limit "off", the guesses it alone would stop all get their 401."""
    app.config[f"QAPP_{setting}"] = None  # off, as create_app reads "off"
    await add_user(app, **OWNER)
    one = address()
    if plan == "one address, one account":
        got = await statuses(client, [wrong(n) for n in range(12)], one)
    elif plan == "many addresses, one account":
        got = await statuses(client, [wrong(n) for n in range(CEILING + 10)])
    else:
        for n in range(40):
            await add_user(app, f"user{n:02d}", "right password")
        got = await statuses(client, [wrong(n, f"user{n:02d}") for n in range(40)], one)
    assert set(got) == {401}


@ON_STORES
async def test_a_refund_goes_back_to_the_window_it_was_counted_in(store: Store) -> None:
    """An event given back after its window ended changes nothing in the next window."""
    limit = Limit(1, 2)
    await clear_of_a_boundary(limit.period, room=1.5)
    first = await hit(store, "k", limit)
    assert first.allowed
    await refund(store, first)
    again = await hit(store, "k", limit)
    assert again.allowed  # given back in its own window: room for one more
    await asyncio.sleep(limit.period - time.time() % limit.period + 0.05)
    await refund(store, again)  # its window is over
    assert (await hit(store, "k", limit)).allowed
    assert not (await hit(store, "k", limit)).allowed


def test_default_limits_need_ten_addresses_to_lock_the_owner_out() -> None:
    """With the defaults one address adds at most 5 guesses to an account's 50 a quarter
    hour, and no warning is given."""
    assert one_client_share(Limit(50, 900), Limit(5, 900), Limit(30, 60)) == 5
    assert lockout_risk({key: default for key, (default, _) in SERVICE_SETTINGS.items()}) is None


@pytest.mark.parametrize(
    ("settings", "share"),
    [
        ({"LOGIN_LIMIT": "5/minute"}, "75"),  # 15 one-minute windows in a quarter hour
        ({"LOGIN_LIMIT": "off", "LOGIN_CLIENT_LIMIT": "off"}, "unlimited"),
    ],
)
def test_one_address_that_can_spend_the_ceiling_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, settings: dict[str, str], share: str
) -> None:
    """Limits that let one address spend an account's ceiling alone log one warning."""
    with caplog.at_level(logging.WARNING, logger="qapp.service.auth"):
        create_app({"INSTANCE_PATH": str(tmp_path), **settings})
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "qapp.service.auth"]
    assert f"one client can make {share} login attempts" in warning
    assert "LOGIN_ACCOUNT_LIMIT" in warning


def test_a_login_limit_that_is_not_a_limit_fails_at_startup(tmp_path: Path) -> None:
    """A malformed login limit fails when the app is built, naming its setting."""
    with pytest.raises(ConfigurationError, match="LOGIN_ACCOUNT_LIMIT: not a rate limit"):
        create_app({"INSTANCE_PATH": str(tmp_path), "LOGIN_ACCOUNT_LIMIT": "fifty"})


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """qapp serve with 2 workers on SQLite, default limits, trusting 127.0.0.1 as a proxy."""
    folder = tmp_path_factory.mktemp("lockout")
    env = {
        "QAPP_STORE_URL": f"sqlite://{folder / 'qapp.db'}",
        "QAPP_INSTANCE_PATH": str(folder),
        "QAPP_TRUSTED_PROXIES": "127.0.0.1",
    }
    with HypercornServer(workers=2, env=env) as server:
        yield server


@pytest.mark.slow
def test_on_two_workers_a_stranger_cannot_lock_the_owner_out(two_workers: HypercornServer) -> None:
    """Against 2 workers sharing the store, 20 guesses from one address on new connections:
    5 get 401 and 15 a 429 with Retry-After, and the owner, from elsewhere, logs in."""
    # A new connection per request: the kernel spreads them over both workers.
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=two_workers.url, limits=fresh, timeout=30) as c:
        assert c.post("/auth/register", json=OWNER, headers=address()).status_code == 201
        deadline = 900 - time.time() % 900
        if deadline < 20:
            time.sleep(deadline + 0.05)
        stranger = address()
        answers = [c.post("/auth/login", json=wrong(n), headers=stranger) for n in range(20)]
        assert [a.status_code for a in answers] == [401] * PER_PAIR + [429] * 15
        assert all(int(a.headers["Retry-After"]) >= 1 for a in answers[PER_PAIR:])
        owner = c.post("/auth/login", json=OWNER, headers=address())
        assert owner.status_code == 200
        assert c.get("/auth/me").json() == {"username": "ada"}
