"""``qapp serve --server granian``: the guarantees of ``qapp serve`` on granian's workers.

Crash replacement, the race matrix, the fault tests and the busy-port
refusal run on both servers in their own modules; these are the checks
that only the granian path needs: a graceful stop runs ``after_serving``
in every worker, HTTP/2 stays off on cleartext, and what granian cannot
serve is refused in one line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypercorn.config import Config

from qapp.server import granian
from qapp.testing import HypercornServer, free_port

pytestmark = pytest.mark.slow

#: An app that records, per worker, that its lifespan started and stopped.
LIFESPAN_APP = """
import os
from pathlib import Path
from quart import Quart

app = Quart(__name__)
MARKS = Path(os.environ["MARKS"])

@app.before_serving
async def hello() -> None:
    (MARKS / f"{os.getpid()}.started").write_text("")

@app.after_serving
async def goodbye() -> None:
    (MARKS / f"{os.getpid()}.stopped").write_text("")

@app.get("/")
async def index() -> dict[str, int]:
    return {"worker": os.getpid()}
"""


def test_sigterm_runs_after_serving_in_every_worker(tmp_path: Path) -> None:
    """SIGTERM to the parent of 3 granian workers: each ran before_serving, then after_serving."""
    (tmp_path / "lifespan_app.py").write_text(LIFESPAN_APP)
    marks = tmp_path / "marks"
    marks.mkdir()
    server = HypercornServer(
        workers=3, app="lifespan_app:app", cwd=tmp_path, env={"MARKS": str(marks)}, server="granian"
    )
    with server:
        # The server answers once one worker does; on a busy machine the others
        # may still be starting, and a worker stopped mid-start never serves.
        deadline = time.monotonic() + 30
        while len(list(marks.glob("*.started"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = {p.stem for p in marks.glob("*.started")}
        assert server.proc is not None
        proc = server.proc
        server.stop()
    assert proc.returncode == 0
    assert len(started) == 3
    assert {p.stem for p in marks.glob("*.stopped")} == started


async def test_cleartext_http2_is_refused(one_granian_server: HypercornServer) -> None:
    """The HTTP/2 preface on plain TCP gets no HTTP/2 answer: granian serves HTTP/1.1 only."""
    reader, writer = await asyncio.open_connection("127.0.0.1", one_granian_server.port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(64), 5)
    except ConnectionResetError:
        answer = b""
    writer.close()
    # An HTTP/2 server answers the preface with a SETTINGS frame (type 4 in
    # byte 3); an HTTP/1.1 server answers 400 or hangs up.
    assert not (len(answer) >= 4 and answer[3] == 4), answer
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer


@pytest.fixture(scope="module")
def one_granian_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HypercornServer]:
    """One granian worker on a SQLite file of its own."""
    folder = tmp_path_factory.mktemp("granian")
    env = {"QAPP_STORE_URL": f"sqlite://{folder / 'qapp.db'}", "QAPP_INSTANCE_PATH": str(folder)}
    with HypercornServer(workers=1, env=env, server="granian") as running:
        yield running


@pytest.mark.parametrize(
    ("bind", "words"),
    [("unix:/tmp/qapp.sock", "host:port"), ("127.0.0.1", "no port")],
)
def test_what_granian_cannot_serve_is_one_line(tmp_path: Path, bind: str, words: str) -> None:
    """A bind granian cannot listen on: exit 1 and one line saying why, before any worker."""
    done = subprocess.run(
        [sys.executable, "-m", "qapp.tools.cli", "serve", "--server", "granian", "--bind", bind],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "QAPP_INSTANCE_PATH": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert words in lines[0]


def test_settings_follow_the_hypercorn_config() -> None:
    """bind, workers, backlog, keep-alive and graceful timeout carry over to granian's settings."""
    config = Config()
    config.bind = [f"127.0.0.1:{free_port()}"]
    config.workers = 3
    config.backlog = 2048
    config.keep_alive_timeout = 5
    config.graceful_timeout = 10
    config.application_path = "qapp.asgi:app"
    got = granian.settings(config)
    host, port = config.bind[0].split(":")
    assert (got["address"], got["port"], got["workers"]) == (host, int(port), 3)
    assert got["backlog"] == 2048
    assert got["http1_settings"].header_read_timeout == 5000
    assert got["workers_kill_timeout"] == 10
    assert got["respawn_failed_workers"] is True
    assert str(got["http"]) == "1"
    assert str(granian.settings(config, h2c=True)["http"]) == "auto"
