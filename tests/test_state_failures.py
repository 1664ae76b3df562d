"""A store that cannot be reached raises the project's error, and the app says 503."""

from __future__ import annotations

from pathlib import Path

import pytest

from qapp import create_app
from qapp.state import ConfigurationError, StoreUnavailable, open_store, store_from_url
from qapp.testing import RedisServer, free_port


@pytest.mark.parametrize(
    "url",
    ["mysql://localhost/db", "no-scheme", "", "sqlite://", "sqlite:///:memory:"],
)
def test_bad_url_is_configuration_error(url: str) -> None:
    """An unknown scheme or a URL that names nothing fails before anything connects."""
    with pytest.raises(ConfigurationError):
        store_from_url(url)


def test_bad_url_fails_at_create_app(tmp_path: Path) -> None:
    """create_app refuses a bad store URL at startup, not at the first request."""
    with pytest.raises(ConfigurationError, match="unknown store scheme"):
        create_app({"STORE_URL": "mongo://x", "INSTANCE_PATH": str(tmp_path)})


def test_configuration_error_hides_password() -> None:
    """The error for a bad URL does not repeat the password in it."""
    with pytest.raises(ConfigurationError) as info:
        store_from_url("mongo://user:hunter2@host/db")
    assert "hunter2" not in str(info.value)


async def test_redis_closed_port_is_unavailable() -> None:
    """A Redis URL on a closed port raises StoreUnavailable, keeping the driver's cause."""
    with pytest.raises(StoreUnavailable) as info:
        await open_store(f"redis://127.0.0.1:{free_port()}/0")
    assert info.value.__cause__ is not None


async def test_redis_operations_unavailable_not_driver_error() -> None:
    """Every operation on an unreachable Redis raises StoreUnavailable."""
    store = store_from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("k")
        with pytest.raises(StoreUnavailable):
            await store.incr("k")
        with pytest.raises(StoreUnavailable):
            async with store.lock("l", wait=0.1):
                pass
    finally:
        await store.close()


@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
async def test_unusable_sqlite_path_is_unavailable(tmp_path: Path, where: str) -> None:
    """A SQLite path that cannot be opened raises StoreUnavailable."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = blocker / "qapp.db" if where == "under-a-file" else tmp_path
    with pytest.raises(StoreUnavailable):
        await open_store(f"sqlite://{path}")


async def test_sqlite_recovers_once_path_is_usable(tmp_path: Path) -> None:
    """A SQLite store that failed to open works once its folder is back, without a restart."""
    folder = tmp_path / "later"
    folder.mkdir()
    store = store_from_url(f"sqlite://{folder / 'qapp.db'}")
    folder.rmdir()
    folder.write_text("a file where the folder should be")
    with pytest.raises(StoreUnavailable):
        await store.set("k", 1)
    folder.unlink()
    folder.mkdir(mode=0o700)  # the store makes no folder itself: a configured one must exist
    await store.set("k", 1)
    assert await store.get("k") == 1
    await store.close()


async def test_health_503_then_recovers(tmp_path: Path) -> None:
    """/health is a JSON 503 with Retry-After while Redis is down, and 200 once it is up."""
    port = free_port()
    app = create_app({"STORE_URL": f"redis://127.0.0.1:{port}/0", "INSTANCE_PATH": str(tmp_path)})
    async with app.test_app() as test_app:
        client = test_app.test_client()
        response = await client.get("/health")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        body = await response.get_json()
        assert body["status"] == "unavailable"
        assert body["error"] == "store_unavailable"
        with RedisServer(port=port):
            response = await client.get("/health")
            assert response.status_code == 200
            assert (await response.get_json())["store"] == "redis"
