"""The citizen app as servers import it: ``tests.citizen_asgi:app``, built from the environment."""

from __future__ import annotations

from tests.citizen_app import from_environment

app = from_environment()
