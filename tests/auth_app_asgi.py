""":mod:`tests.auth_app` for servers: ``tests.auth_app_asgi:app``, in each worker afresh.

Its instance folder is ``$QAPP_INSTANCE_PATH``; every other setting comes
from the ``QAPP_*`` variables, which the extension reads.
"""

from __future__ import annotations

import os

from tests.auth_app import create_app

app = create_app(os.environ["QAPP_INSTANCE_PATH"])
