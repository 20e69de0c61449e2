"""Sandboxed path resolution: a guest path never leaves its directory.

Every ``*-at`` call names a path relative to a directory descriptor.  The
kernel is never handed such a path whole: :func:`resolve` walks it one
component at a time with ``openat``/``readlinkat`` relative to file
descriptors, the way cap-std (wasmtime's sandbox) does, and hands the
operation a directory fd plus one final name that contains no ``/`` (except
a single trailing slash, kept so that ``name/`` still demands a directory).

Rules, each matching wasmtime:

* an absolute path is refused (``not-permitted``), so is an empty path
  (``no-entry``) and one with a NUL byte (``invalid``);
* ``..`` pops one directory of the walk; popping the starting directory is an
  escape (``not-permitted``), even if a later component would come back in;
* symbolic links in the middle of a path are expanded by hand, relative to
  the directory that holds them: an absolute target is an escape, a relative
  one is walked under the same rules; a final symlink is expanded only when
  the caller follows symlinks (or the path ends with ``/``); more than
  :data:`MAX_SYMLINK_EXPANSIONS` expansions is ``loop``;
* the directory a descriptor names is its own root: ``..`` from a
  subdirectory descriptor is an escape too, as with cap-std.

Each directory fd opened on the way belongs to the :class:`Resolved` result
and is closed with it.  Host functions run one at a time on the event loop's
thread, so no guest can change the tree between the walk and the operation
that follows it; the final operation still uses ``O_NOFOLLOW`` /
``AT_SYMLINK_NOFOLLOW`` wherever the kernel offers it.
"""

from __future__ import annotations

import errno
import os

from .errors import ESCAPE, fs_error

#: cap-std's limit, and Linux's.
MAX_SYMLINK_EXPANSIONS = 40

# Intermediate directories are opened only to be walked through.
_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Resolved:
    """A directory fd and a final name to operate on (a context manager).

    ``name`` is ``"."`` when the path named the directory itself (``"."``,
    ``"a/.."``); it ends with ``/`` when the guest's path did.
    """

    __slots__ = ("_owned", "dir_fd", "name")

    def __init__(self, dir_fd: int, name: str, owned: list[int]) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self._owned = owned

    def close(self) -> None:
        owned, self._owned = self._owned, []
        for fd in owned:
            os.close(fd)

    def __enter__(self) -> Resolved:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Resolved fd={self.dir_fd} name={self.name!r} walked={len(self._owned)}>"


def check_path(path: str) -> None:
    """Refuse what no path may contain (before any system call)."""
    if "\0" in path:
        raise fs_error("invalid")


def _components(path: str) -> list[str]:
    """The components of ``path`` as a stack (the next one last)."""
    return [c for c in reversed(path.split("/")) if c]


def resolve(base: int, path: str, *, follow: bool) -> Resolved:
    """Walk ``path`` under the directory ``base`` without leaving it.

    ``follow`` expands a symlink in the final position.  Raises ``Err`` with
    the WIT error code for refusals and ``OSError`` for what the kernel says
    on the way (mapped by the caller).
    """
    check_path(path)
    if not path:
        raise fs_error("no-entry")
    if path.startswith("/"):
        raise fs_error(ESCAPE)
    trailing = path.endswith("/")
    pending = _components(path)
    owned: list[int] = []
    expansions = 0
    try:
        while pending:
            comp = pending.pop()
            cur = owned[-1] if owned else base
            if comp == ".":
                continue
            if comp == "..":
                if not owned:
                    raise fs_error(ESCAPE)
                os.close(owned.pop())
                continue
            last = not pending
            if last and not follow and not trailing:
                return Resolved(cur, comp, owned)
            if not last:
                try:
                    owned.append(os.open(comp, _WALK_FLAGS, dir_fd=cur))
                    continue
                except OSError as e:
                    # ENOTDIR/ELOOP: a symlink (expanded below) or not a directory.
                    if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
            try:
                target = os.readlink(comp, dir_fd=cur)
            except OSError as e:
                if last and e.errno in (errno.EINVAL, errno.ENOENT):
                    # Not a symlink (or absent, for creating calls): the final name.
                    return Resolved(cur, comp + "/" if trailing else comp, owned)
                if e.errno == errno.EINVAL:
                    raise fs_error("not-directory") from None
                raise
            expansions += 1
            if expansions > MAX_SYMLINK_EXPANSIONS:
                raise fs_error("loop")
            if not target or target.startswith("/"):
                raise fs_error(ESCAPE if target else "no-entry")
            if last and target.endswith("/"):
                trailing = True
            pending.extend(_components(target))
        # The path named a directory of the walk itself.
        return Resolved(owned[-1] if owned else base, ".", owned)
    except BaseException:
        for fd in owned:
            os.close(fd)
        raise
