"""The service imports and answers with torch and training/ blocked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import sys, json
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name == "training" or name.startswith("training."):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
from fastapi.testclient import TestClient
import service.main
from service.config import ServiceSettings
app = service.main.create_app(ServiceSettings(bundles=[sys.argv[1]], _env_file=None))
with TestClient(app) as client:
    r = client.post("/v1/classify", json={"inputs": "a great movie"})
    print(json.dumps({"status": r.status_code, "torch": "torch" in sys.modules,
                      "training": any(m.startswith("training") for m in sys.modules)}))
"""


def test_service_runs_without_torch(tiny_bundles):
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_bundles["sequence-classification"])],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "torch": False, "training": False}
