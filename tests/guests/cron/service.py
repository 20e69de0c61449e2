"""A long-running command calling the imported ``fabric:guests/job`` (world cron-service).

Usage: ``service COUNT INTERVAL_MS ARG [ARG...]``: calls ``job.run`` COUNT
times, INTERVAL_MS apart, cycling through the ARGs, and prints one line per
call: ``run.I=ok:VALUE`` or ``run.I=err:VALUE``; then ``runs=COUNT``.
"""

# Only modules imported at build time exist at run time: import everything here.
import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import job


def out(key: str, value: object) -> None:
    sys.stdout.write(f"{key}={value}\n")
    sys.stdout.flush()


class Run(exports.Run):
    def run(self) -> None:
        argv = sys.argv[1:]
        count = int(argv[0]) if argv else 1
        interval_ms = int(argv[1]) if len(argv) > 1 else 0
        args = argv[2:] or ["ok:tick"]
        out("scheduled", count)
        for index in range(count):
            if index and interval_ms:
                time.sleep(interval_ms / 1000)
            arg = args[index % len(args)]
            try:
                out(f"run.{index}", f"ok:{job.run(arg)}")
            except Err as exc:
                out(f"run.{index}", f"err:{exc.value}")
        out("runs", count)
