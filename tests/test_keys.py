"""Hostile keys never reach another key's data, on memory, SQLite and Redis.

Requests go through raw ASGI (:func:`tests.hostile.call`) with the request
target written byte for byte, so that percent-encoded separators, control
characters and dot segments arrive as a server would decode them; httpx
would normalise some of them away before they were sent.
"""

from __future__ import annotations

import itertools
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import Quart

from tests.hostile import Raw, call, encode_segment, key_ok
from tests.storedump import cookie_of, snapshot

JSON = [(b"content-type", b"application/json")]

#: Raw key segments that are not keys: control characters, separators in
#: every spelling, look-alikes of the key characters, and too long.
HOSTILE_KEYS = [
    "a%00b",  # NUL
    "k%0A",  # newline
    "k%0D%0Aset-cookie:x",  # CR LF
    "a%09b",  # tab
    "%1B%5B2J",  # escape sequence
    "a%7Fb",  # DEL
    "a/b",  # separator, literal
    "a%2Fb",  # separator, encoded
    "a%2fb",
    "..%2Fk",  # traversal, encoded
    "a/../k",
    "a%2F..%2F..%2Fk",
    "%EF%BC%8Fk",  # FULLWIDTH SOLIDUS
    "a%E2%88%95k",  # DIVISION SLASH
    "a%EF%BC%9Ab",  # FULLWIDTH COLON
    "a%CB%90b",  # MODIFIER LETTER TRIANGULAR COLON
    "%D0%B0",  # CYRILLIC a
    "a%E2%80%A4b",  # ONE DOT LEADER
    "k%C2%A0",  # NO-BREAK SPACE
    "k%E2%80%8B",  # ZERO WIDTH SPACE
    "%FF%FE",  # not UTF-8
    "%zz",  # a stray percent
    "k%3Fx=1",  # '?'
    "k%23frag",  # '#'
    "a%20b",
    "k" * 201,
    "k" * 10_000,
]


def _put(key: str, body: str) -> Raw:
    data = body.encode()
    headers = [*JSON, (b"content-length", str(len(data)).encode())]
    return Raw("PUT", "/cache/" + encode_segment(key), headers, [data])


@pytest.fixture
async def seeded(app: Quart, client: httpx.AsyncClient) -> Quart:
    """The app started, with neighbour keys, a memo, a user and a session in its stores."""
    for key in ["k", "a", "b", "a:b", "a.b", "..", "k" * 200]:
        assert (await call(app, _put(key, json.dumps(f"value of {key}")))).status == 204
    app.config["QAPP_MEMO_WORK"] = 0.0
    assert (await client.get("/memo/k")).status_code == 200
    creds = {"username": "keeper", "password": "keeper-password"}
    await client.post("/auth/register", json=creds)
    assert cookie_of(await client.post("/auth/login", json=creds)) is not None
    return app


async def test_hostile_keys_are_4xx_and_change_nothing(seeded: Quart) -> None:
    """Every hostile key is refused on every cache and memo method, and no stored byte changes."""
    before = await snapshot(seeded)
    for segment, (method, prefix, body) in itertools.product(
        HOSTILE_KEYS,
        [
            ("PUT", "/cache/", b'"overwritten"'),
            ("GET", "/cache/", b""),
            ("DELETE", "/cache/", b""),
            ("GET", "/memo/", b""),
        ],
    ):
        headers = [*JSON, (b"content-length", str(len(body)).encode())] if body else []
        answer = await call(seeded, Raw(method, prefix + segment, headers, [body]))
        # 400 invalid_key; 404 where the path cannot be a key at all (a '?' ends it).
        assert answer.status in {400, 404}, (method, segment, answer.status, answer.body)
        assert answer.header("content-type") == "application/json"
        assert set(answer.json()) == {"error", "message"}
        if answer.status == 400:
            assert answer.json()["error"] == "invalid_key"
    assert await snapshot(seeded) == before


async def test_separator_paths_are_not_rerouted(seeded: Quart) -> None:
    """Doubled, dotted and trailing slashes are matched as sent, never merged into another key."""
    before = await snapshot(seeded)
    for target in ["/cache//k", "/cache/k/", "/cache/./k", "/cache/k/.", "//cache/a//b"]:
        answer = await call(seeded, Raw("PUT", target, [*JSON, (b"content-length", b"1")], [b"1"]))
        assert answer.status in {400, 404}, (target, answer.status, answer.body)
        assert answer.header("location") is None
    assert await snapshot(seeded) == before


async def test_keys_shaped_like_other_namespaces_stay_in_the_cache(
    seeded: Quart, client: httpx.AsyncClient
) -> None:
    """A cache key spelled like a session, user, memo or counter key touches only cache:<key>."""
    contents = await snapshot(seeded)
    (url,) = contents
    session_key = next(k for k in contents[url] if k.startswith("session:"))
    targets = [session_key, "user:keeper", "memo:value:k", "memo:count:k", "counter:atomic"]
    for key in targets:
        assert (await client.put(f"/cache/{key}", json="planted")).status_code == 204
    after = (await snapshot(seeded))[url]
    for key in targets:
        assert after[f"cache:{key}"] == '{"value":"planted"}'
    # Every other entry is as it was.
    assert {k: v for k, v in after.items() if not k.startswith("cache:")} == {
        k: v for k, v in contents[url].items() if not k.startswith("cache:")
    }
    assert (await client.get("/auth/me")).json() == {"username": "keeper"}


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    keys=st.lists(
        st.text(alphabet="ab._:-", min_size=1, max_size=6), min_size=2, max_size=10, unique=True
    )
)
async def test_keys_differing_only_in_separators_never_collide(
    seeded: Quart, keys: list[str]
) -> None:
    """Valid keys made of the same letters with different separators each keep their own value."""
    for i, key in enumerate(keys):
        assert key_ok(key)
        assert (await call(seeded, _put(key, str(i)))).status == 204
    for i, key in enumerate(keys):
        answer = await call(seeded, Raw("GET", "/cache/" + encode_segment(key)))
        assert answer.status == 200
        assert answer.json() == {"key": key, "value": i}
    (data,) = (await snapshot(seeded)).values()
    for i, key in enumerate(keys):
        assert json.loads(data[f"cache:{key}"]) == {"value": i}
