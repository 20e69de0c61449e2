"""Sans-IO reading of the few client statements the MySQL front door answers itself.

Outside a transaction the front door holds no server connection for a client,
so it keeps the client's session settings that transaction pooling must
carry from one lease to the next (``autocommit``, ``SET NAMES``, the
database) and answers statements that only change them, or end a
transaction that is not open, without borrowing a connection. Everything
else is forwarded; `classify` also says whether a forwarded statement may
leave session state behind on the server connection (then the connection is
reset when it goes back to its pool).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

__all__ = ["EndTransaction", "Forward", "SetAutocommit", "SetNames", "Use", "classify"]

_LEAD: Final = r"^(?:\s|/\*(?!!).*?\*/)*"
_END: Final = r"\s*;?\s*$"
_AUTOCOMMIT = re.compile(
    _LEAD + r"SET\s+(?:SESSION\s+|LOCAL\s+|@@SESSION\.|@@LOCAL\.|@@)?autocommit\s*:?=\s*"
    r"(0|1|ON|OFF|TRUE|FALSE)" + _END,
    re.I | re.S,
)
_NAMES = re.compile(
    _LEAD + r"SET\s+NAMES\s+(['\"`]?)(\w+)\1(?:\s+COLLATE\s+(['\"`]?)(\w+)\3)?" + _END,
    re.I | re.S,
)
_USE = re.compile(_LEAD + r"USE\s+(`?)(\w+)\1" + _END, re.I | re.S)
_END_TXN = re.compile(_LEAD + r"(COMMIT|ROLLBACK)(?:\s+WORK)?" + _END, re.I | re.S)
_FIRST_WORD = re.compile(_LEAD + r"(\w+)", re.S)
_USER_VARIABLE = re.compile(r"(?<!@)@(?!@)")
#: statements that leave no session state behind (unless they assign a user variable)
_CLEAN: Final = frozenset(
    {
        "select", "insert", "update", "delete", "replace", "with", "values", "table",
        "show", "describe", "desc", "explain", "begin", "start", "commit", "rollback",
        "savepoint", "release", "xa", "analyze", "check", "checksum", "optimize",
    }
)  # fmt: skip
#: charset the pool's connections use; clients asking for another one get SET NAMES
DEFAULT_CHARSET: Final = "utf8mb4"
DEFAULT_COLLATION: Final = "utf8mb4_general_ci"


class SetAutocommit(msgspec.Struct, frozen=True):
    value: bool


class SetNames(msgspec.Struct, frozen=True):
    charset: str
    collation: str | None

    @property
    def is_default(self) -> bool:
        return self.charset.lower() == DEFAULT_CHARSET and (
            self.collation is None or self.collation.lower() == DEFAULT_COLLATION
        )

    def statement(self) -> bytes:
        collate = f" COLLATE {self.collation}" if self.collation else ""
        return f"SET NAMES {self.charset}{collate}".encode("ascii")


class Use(msgspec.Struct, frozen=True):
    database: str


class EndTransaction(msgspec.Struct, frozen=True):
    """COMMIT or ROLLBACK (answered locally when no transaction is open)."""

    commit: bool


class Forward(msgspec.Struct, frozen=True):
    """Run on a server connection; ``dirty``: it may leave session state there."""

    dirty: bool


Statement = SetAutocommit | SetNames | Use | EndTransaction | Forward

_SHORT: Final = 512  # the statements answered locally are short


def classify(sql: bytes) -> Statement:
    """What to do with one COM_QUERY text."""
    head = sql[:_SHORT].decode("utf-8", "replace")
    if len(sql) <= _SHORT:
        if m := _AUTOCOMMIT.match(head):
            return SetAutocommit(m.group(1).upper() in ("1", "ON", "TRUE"))
        if m := _NAMES.match(head):
            return SetNames(m.group(2), m.group(4))
        if m := _USE.match(head):
            return Use(m.group(2))
        if m := _END_TXN.match(head):
            return EndTransaction(m.group(1).upper() == "COMMIT")
    word = _FIRST_WORD.match(head)
    if word is None or word.group(1).lower() not in _CLEAN:
        return Forward(dirty=True)
    if b";" in sql.rstrip(b"; \t\r\n"):  # several statements (or a ';' in a string)
        return Forward(dirty=True)
    if b"@" in sql and _USER_VARIABLE.search(sql.decode("utf-8", "replace")):
        return Forward(dirty=True)
    return Forward(dirty=False)
