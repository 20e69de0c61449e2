"""Reading a manifest: TOML text or parsed data -> `Manifest`, then `validate`.

Decoding errors and validation problems alike are `ManifestError`s naming the
file, the line and the field (``_toml_lines``, ``_decode_errors``).
The structs live in ``manifest.py``; the checks that need more than the
types can say (files, ports, native service configs) in ``checks.py``.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path as FsPath
from typing import Any

import msgspec

from . import units
from ._decode_errors import format_path, translate
from ._toml_lines import SourceMap, scan_lines
from .checks import validate
from .errors import ManifestError, ManifestIssue
from .manifest import Manifest, ManifestFile, resolve_path, resolve_workload

__all__ = ["MAX_DEPTH", "load_manifest", "loads_manifest", "manifest_from_dict"]


def load_manifest(path: str | os.PathLike[str], *, check: bool = True) -> Manifest:
    """Read, decode and (unless ``check=False``) validate the manifest at ``path``."""
    file = os.fspath(path)
    try:
        data = FsPath(file).read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        issue = ManifestIssue(repr(file)[1:-1], None, "", f"cannot read manifest: {reason}")
        raise ManifestError([issue]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        issue = ManifestIssue(file, line, "", "invalid TOML: not UTF-8 text")
        raise ManifestError([issue]) from None
    base_dir = os.path.dirname(os.path.abspath(file))
    return loads_manifest(text, path=file, base_dir=base_dir, check=check)


_TOML_POSITION = re.compile(r"^(.*) \(at (?:line (\d+), column (\d+)|end of document)\)$", re.S)


def loads_manifest(
    text: str, *, path: str = "<string>", base_dir: str | None = None, check: bool = True
) -> Manifest:
    """Decode manifest ``text``; ``path`` is used in messages, ``base_dir`` for relative paths."""
    try:
        raw = tomllib.loads(text)
    except RecursionError:
        issue = ManifestIssue(path, None, "", f"invalid TOML: {_TOO_DEEP}")
        raise ManifestError([issue]) from None
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.match(str(exc))
        if match is None:  # pragma: no cover - tomllib always reports a position
            raise ManifestError([ManifestIssue(path, None, "", f"invalid TOML: {exc}")]) from None
        message, line, column = match.groups()
        if line is None:
            where = max(1, len(text.rstrip("\r\n").splitlines()))
            at = "at end of document"
        else:
            where, at = int(line), f"at column {column}"
        issue = ManifestIssue(path, where, "", f"invalid TOML: {message} ({at})")
        raise ManifestError([issue]) from None
    try:
        lines = scan_lines(text)
    except RecursionError:
        lines = SourceMap()
    return manifest_from_dict(raw, path=path, base_dir=base_dir, source_map=lines, check=check)


MAX_DEPTH = 64
_TOO_DEEP = f"arrays or tables nested more than {MAX_DEPTH} levels deep"


def _too_deep(value: Any) -> tuple[str | int, ...] | None:
    """The path of the first value nested deeper than ``MAX_DEPTH``, if any (no recursion)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, where = stack.pop()
        if len(where) > MAX_DEPTH:
            return where
        if isinstance(item, dict):
            stack.extend((v, (*where, k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, (*where, i)) for i, v in enumerate(item))
    return None


def manifest_from_dict(
    raw: dict[str, Any],
    *,
    path: str = "<string>",
    base_dir: str | None = None,
    source_map: SourceMap | None = None,
    check: bool = True,
) -> Manifest:
    """Decode already-parsed TOML data (e.g. ``Manifest.to_dict()``)."""
    lines = source_map if source_map is not None else SourceMap()
    deep = _too_deep(raw)
    if deep is not None:
        where = deep[: MAX_DEPTH // 4]
        issue = ManifestIssue(path, lines.line(where), format_path(where), _TOO_DEEP)
        raise ManifestError([issue])
    try:
        doc = msgspec.convert(raw, ManifestFile, dec_hook=units.dec_hook)
    except msgspec.ValidationError as exc:
        field_path, message = translate(exc, raw, ManifestFile)
        issue = ManifestIssue(path, lines.line(field_path), format_path(field_path), message)
        raise ManifestError([issue]) from None
    base = base_dir if base_dir is not None else os.getcwd()
    manifest = Manifest(
        path=path,
        workloads=tuple(resolve_workload(w, base) for w in doc.workloads),
        python_path=tuple(resolve_path(p, base) for p in doc.python_path),
        grace=doc.grace,
        metrics=doc.metrics,
        max_instances=doc.max_instances,
        source_map=lines,
    )
    if check:
        validate(manifest)
    return manifest
