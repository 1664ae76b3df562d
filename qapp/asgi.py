"""The ASGI app for servers: ``hypercorn -c hypercorn.toml qapp.asgi:app``.

Each worker process imports this module afresh and so builds its own app.
"""

from __future__ import annotations

from qapp import create_app

app = create_app()
