"""A component exporting ``fabric:guests/pipeline`` over an imported ``job`` (world composer).

``pipeline.run(arg)`` calls ``job.run(arg + "#1")`` and ``job.run(arg + "#2")``
and returns ``ok("pipeline[A|B]")``; the first job error becomes
``err("pipeline-err:E")``.
"""

# Only modules imported at build time exist at run time: import everything here.
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import job


class Pipeline(exports.Pipeline):
    def run(self, arg: str) -> str:
        try:
            first = job.run(f"{arg}#1")
            second = job.run(f"{arg}#2")
        except Err as exc:
            raise Err(f"pipeline-err:{exc.value}") from None
        return f"pipeline[{first}|{second}]"
