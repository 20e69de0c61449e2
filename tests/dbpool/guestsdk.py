"""The guest SDK loaded from its file, as componentize-py sees it
(``-p services/dbpool/guest``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

GUEST_DIR = Path(__file__).resolve().parents[2] / "services" / "dbpool" / "guest"


def _load() -> Any:
    if "fabric_dbpool" in sys.modules:
        return sys.modules["fabric_dbpool"]
    spec = importlib.util.spec_from_file_location("fabric_dbpool", GUEST_DIR / "fabric_dbpool.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fabric_dbpool"] = module
    spec.loader.exec_module(module)
    return module


fabric_dbpool: Any = _load()
