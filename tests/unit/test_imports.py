"""House rule: the serving runtime imports (and builds an app) without torch."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
sys.modules['torch'] = None  # any 'import torch' now raises ImportError
import edge_service.server.app, edge_service.runtime.ort_engine, edge_service.runtime.pool
import edge_service.control.loop, edge_service.monitor, edge_service.repository, edge_service.cli
from edge_service.server.app import create_app
create_app()
print('ok')
"""


def test_serving_runtime_imports_when_torch_is_absent() -> None:
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
