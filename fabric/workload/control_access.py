"""Who may serve and who may use a control socket (the checks tmux and ssh-agent make).

* The runtime directory fabric keeps its sockets in (``$XDG_RUNTIME_DIR/fabric``
  or ``/tmp/fabric-<uid>``) is created with mode 0700 and refused when it
  exists but is not a directory owned by the user, or is open to group or
  others (``private_directory``).
* Any other directory holding a socket must be owned by the user or root and
  not writable by others unless it is sticky like ``/tmp`` (``safe_directory``).
* An existing socket path owned by another user is refused (``socket_owner``).
* Both ends check the other's uid with ``SO_PEERCRED`` (``peer_uid``): the
  client sends nothing to a server run by another user; the server answers
  only its own user and root (``client_allowed``).
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import struct
from pathlib import Path

from .errors import ControlError

__all__ = [
    "ControlAccessError",
    "check_server_peer",
    "client_allowed",
    "describe_uid",
    "peer_uid",
    "private_directory",
    "safe_directory",
    "socket_owner",
]

_UCRED = struct.Struct("3i")  # pid, uid, gid


class ControlAccessError(ControlError):
    """A control directory, socket or peer that belongs to someone else."""


def describe_uid(uid: int) -> str:
    """``uid 65534 (nobody)``, or ``uid 4242`` when the uid has no name."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(raw)
    return int(uid)


def check_server_peer(sock: socket.socket, path: str, expected_uid: int | None = None) -> None:
    """Raise ``ControlAccessError`` unless the server behind ``sock`` runs as ``expected_uid``.

    ``expected_uid`` defaults to the caller's uid; nothing may have been sent yet.
    """
    want = os.getuid() if expected_uid is None else expected_uid
    try:
        uid = peer_uid(sock)
    except OSError as exc:
        raise ControlAccessError(
            f"cannot tell who serves the control socket {path}: {exc.strerror or exc}"
        ) from None
    if uid != want:
        raise ControlAccessError(
            f"the control socket {path} is served by {describe_uid(uid)}, not by "
            f"{describe_uid(want)}; refusing to talk to it"
        )


def client_allowed(uid: int, server_uid: int | None = None) -> bool:
    """Whether a client of ``uid`` may use a server running as ``server_uid`` (default: us)."""
    own = os.getuid() if server_uid is None else server_uid
    return uid in (own, 0)


def private_directory(directory: Path, *, create: bool = True) -> None:
    """Create ``directory`` with mode 0700, or check that an existing one is private.

    Refused (``ControlAccessError``) when it is not a directory (a symlink
    included), is owned by another user, or grants any access to group or others.
    """
    if create:
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ControlAccessError(
                f"cannot create the control directory {directory}: {exc.strerror or exc}"
            ) from None
    try:
        info = directory.lstat()
    except FileNotFoundError:
        if create:  # pragma: no cover - just created
            raise
        return
    except OSError as exc:
        raise ControlAccessError(
            f"cannot check the control directory {directory}: {exc.strerror or exc}"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ControlAccessError(f"the control directory {directory} is not a directory")
    if info.st_uid != os.getuid():
        raise ControlAccessError(
            f"the control directory {directory} is owned by {describe_uid(info.st_uid)}, "
            f"not by {describe_uid(os.getuid())}; remove it or set $FABRIC_CONTROL"
        )
    if info.st_mode & 0o077:
        raise ControlAccessError(
            f"the control directory {directory} has mode {stat.S_IMODE(info.st_mode):04o}; "
            f"it must be private to its owner (chmod 700 {directory})"
        )


def safe_directory(directory: Path) -> None:
    """Check a directory given for a socket: owned by us or root, and others cannot
    replace what is in it (not writable by group or others unless sticky)."""
    try:
        info = directory.stat()
    except FileNotFoundError:
        raise ControlAccessError(
            f"the directory of the control socket, {directory}, does not exist"
        ) from None
    except OSError as exc:
        raise ControlAccessError(f"cannot check {directory}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ControlAccessError(f"{directory} (the control socket's directory) is not a directory")
    if info.st_uid not in (os.getuid(), 0):
        raise ControlAccessError(
            f"the directory of the control socket, {directory}, is owned by "
            f"{describe_uid(info.st_uid)}; choose a directory of your own"
        )
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise ControlAccessError(
            f"the directory of the control socket, {directory}, is writable by others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); choose a directory of your own"
        )


def socket_owner(path: Path) -> int | None:
    """The owner uid of an existing ``path`` (not followed if a symlink), None if absent.

    Raises ``ControlAccessError`` when it belongs to someone else.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if info.st_uid != os.getuid():
        raise ControlAccessError(
            f"the control socket path {path} belongs to {describe_uid(info.st_uid)}, "
            f"not to {describe_uid(os.getuid())}; refusing to use it "
            "(remove it, or choose another path with --control or $FABRIC_CONTROL)"
        )
    return info.st_uid
