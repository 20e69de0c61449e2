"""``wasi:random`` — secure random, insecure random, insecure seed."""

from __future__ import annotations

import os
import random as _random

from fabric.engine import HostInterface, TrapError

_insecure = _random.Random()
_MAX = 64 * 1024 * 1024


def _len(n: int) -> int:
    if n > _MAX:
        raise TrapError(f"get-random-bytes: {n} bytes requested (at most {_MAX})")
    return n


def interfaces(version: str) -> list[HostInterface]:
    sec = HostInterface(f"wasi:random/random@{version}")
    sec.func("get-random-bytes", lambda cx, n: os.urandom(_len(n)))
    sec.func("get-random-u64", lambda cx: int.from_bytes(os.urandom(8), "little"))
    ins = HostInterface(f"wasi:random/insecure@{version}")
    ins.func("get-insecure-random-bytes", lambda cx, n: _insecure.randbytes(_len(n)))
    ins.func("get-insecure-random-u64", lambda cx: _insecure.getrandbits(64))
    seed = HostInterface(f"wasi:random/insecure-seed@{version}")
    seed.func("insecure-seed", lambda cx: (_insecure.getrandbits(64), _insecure.getrandbits(64)))
    return [sec, ins, seed]
