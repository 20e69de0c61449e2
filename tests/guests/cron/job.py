"""A short-lived component exporting ``fabric:guests/job`` (world job-component).

``run(arg)`` chooses its behaviour from the prefix of ``arg``:

  ok:TEXT          -> ok("job-ok:TEXT")
  err:TEXT         -> err("job-err:TEXT")
  trap             -> raises: the instance traps
  count            -> ok("count=N"): calls made on this instance so far
  env:NAME         -> ok("env:NAME=VALUE") ("<unset>" when missing)
  echo:PORT:TEXT   -> ok("echo:REPLY"): TEXT sent to an echo server on 127.0.0.1:PORT
  sleep:MS         -> ok("slept:MS") after time.sleep
anything else      -> err("job-unknown:ARG")
"""

# Only modules imported at build time exist at run time: import everything here.
import encodings.idna  # noqa: F401
import os
import socket
import time

from componentize_py_types import Err
from wit_world import exports

_calls = 0


def _echo(port: int, text: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(text.encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class Job(exports.Job):
    def run(self, arg: str) -> str:
        global _calls
        _calls += 1
        kind, _, rest = arg.partition(":")
        if kind == "ok":
            return f"job-ok:{rest}"
        if kind == "err":
            raise Err(f"job-err:{rest}")
        if kind == "trap":
            raise RuntimeError(f"job trapped on {arg!r}")
        if kind == "count":
            return f"count={_calls}"
        if kind == "env":
            return f"env:{rest}={os.environ.get(rest, '<unset>')}"
        if kind == "echo":
            port, _, text = rest.partition(":")
            return f"echo:{_echo(int(port), text)}"
        if kind == "sleep":
            time.sleep(int(rest) / 1000)
            return f"slept:{rest}"
        raise Err(f"job-unknown:{arg}")
