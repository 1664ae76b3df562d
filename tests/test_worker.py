"""The worker process of ``qapp serve``: its garbage collector is tuned before it serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qapp.server.worker import GC_THRESHOLDS


def test_tune_gc_sets_thresholds_and_freezes_what_exists(tmp_path: Path) -> None:
    """After tune_gc, the thresholds are the worker's and the app's objects are frozen."""
    probe = (
        "import gc, json, qapp.asgi\n"
        "from qapp.server.worker import tune_gc\n"
        "before = (gc.get_threshold(), gc.get_freeze_count())\n"
        "tune_gc()\n"
        "print(json.dumps([before, (gc.get_threshold(), gc.get_freeze_count())]))\n"
    )
    # A fresh interpreter: the test process's own collector is left alone.
    env = {**os.environ, "QAPP_INSTANCE_PATH": str(tmp_path), "QAPP_STORE_URL": "memory://"}
    argv = [sys.executable, "-c", probe]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=60)
    (threshold_before, frozen_before), (threshold_after, frozen_after) = json.loads(out.stdout)
    assert tuple(threshold_before) != GC_THRESHOLDS
    assert frozen_before == 0
    assert tuple(threshold_after) == GC_THRESHOLDS
    # The modules and the app, all of them: tens of thousands of objects.
    assert frozen_after > 10_000
