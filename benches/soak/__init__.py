"""The reliability suite: faults injected one at a time into a loaded fabric.

Run ``python -m benches.soak --quick`` (CI, under a minute here) or
``python -m benches.soak`` (the full profile); see ``docs/reliability.md``.
Each fault is a module of its own (``db_restart``, ``backend_kill``,
``client_drop``, ``ingress_flood``, ``huge_result``, ``stalled_reader``,
``crash_loop``, ``sigterm``); :mod:`benches.soak.runner` runs them and
:mod:`benches.soak.report` writes ``soak.json`` and ``soak.md``.
"""

from benches.soak.model import FULL, QUICK, FaultResult, RowCheck, SoakProfile, SoakReport

__all__ = ["FULL", "QUICK", "FaultResult", "RowCheck", "SoakProfile", "SoakReport"]
