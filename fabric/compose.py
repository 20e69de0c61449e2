"""Give a guest ``wasi:io/streams`` over latin-1 strings (``fast_bytes``).

A guest's ``wasi:io/streams`` ``read`` / ``write`` (and their blocking forms)
move ``list<u8>``, which crosses wasmtime's C API one 32-byte value per byte;
``fabric:io/latin1`` moves the same bytes as one latin-1 string
(docs/bytes-as-strings.md). :func:`compose_fast_bytes` builds, for one guest
binary, an outer component that

* opens with the guest's own type, import and alias sections, copied as they
  are, so it imports exactly what the guest imports, plus
  ``fabric:io/latin1@0.1.0``;
* nests a bridge generated for the stream functions this guest imports
  (:func:`bridge_wat`, no code of its own): one instance holding the host's
  stream types and functions and the latin-1 functions, instantiated with the
  imported ``wasi:io/error``, ``wasi:io/poll``, ``wasi:io/streams`` and
  ``fabric:io/latin1``;
* nests the guest, rewritten so that its own lowerings of those functions
  call the latin-1 ones (:mod:`fabric.component_rewrite`), and instantiates it
  with every import taken from the outer's imports except ``wasi:io/streams``,
  taken from the bridge;
* re-exports the guest's exports.

The guest's bytes go straight from its memory to the host as a string and
back: no component in between, no copy between memories. The result is
cached by content hash beside the other builds (:func:`fabric.build.cache_dir`
``/guests``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fabric.build import BuildError, build_wat_guest, cache_dir, write_cached
from fabric.component_binary import (
    PREAMBLE,
    SECTION_ALIAS,
    SECTION_COMPONENT,
    SECTION_EXPORT,
    SECTION_IMPORT,
    SECTION_INSTANCE,
    SECTION_TYPE,
    SORT_CORE,
    SORT_INSTANCE,
    SORT_TYPE,
    ComponentBinaryError,
    ComponentShape,
    name,
    read_component,
    section,
    u32,
    vec,
)
from fabric.component_rewrite import LATIN1_FUNCS, LATIN1_PREFIX, redirect_stream_lowerings

from .wasi.latin1 import VERSION as LATIN1_VERSION

__all__ = [
    "LATIN1_IMPORT",
    "bridge_wat",
    "build_fast_bytes_guest",
    "compose_fast_bytes",
    "stream_funcs",
]

LATIN1_IMPORT = f"fabric:io/latin1@{LATIN1_VERSION}"
_KEY_VERSION = "2"  # bump when the composition changes

_IS, _OS = "(borrow {is})", "(borrow {os})"
_SE_ONLY = "(result (result (error {se})))"
_U64_SE = "(result (result u64 (error {se})))"
_BYTES_SE = "(result (result (list u8) (error {se})))"
#: every function of wasi:io/streams 0.2.x: its parameters and its result
_SIGNATURES: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "[method]input-stream.read": ((("self", _IS), ("len", "u64")), _BYTES_SE),
    "[method]input-stream.blocking-read": ((("self", _IS), ("len", "u64")), _BYTES_SE),
    "[method]input-stream.skip": ((("self", _IS), ("len", "u64")), _U64_SE),
    "[method]input-stream.blocking-skip": ((("self", _IS), ("len", "u64")), _U64_SE),
    "[method]input-stream.subscribe": ((("self", _IS),), "(result (own {p}))"),
    "[method]output-stream.check-write": ((("self", _OS),), _U64_SE),
    "[method]output-stream.write": ((("self", _OS), ("contents", "(list u8)")), _SE_ONLY),
    "[method]output-stream.blocking-write-and-flush": (
        (("self", _OS), ("contents", "(list u8)")),
        _SE_ONLY,
    ),
    "[method]output-stream.flush": ((("self", _OS),), _SE_ONLY),
    "[method]output-stream.blocking-flush": ((("self", _OS),), _SE_ONLY),
    "[method]output-stream.subscribe": ((("self", _OS),), "(result (own {p}))"),
    "[method]output-stream.write-zeroes": ((("self", _OS), ("len", "u64")), _SE_ONLY),
    "[method]output-stream.blocking-write-zeroes-and-flush": (
        (("self", _OS), ("len", "u64")),
        _SE_ONLY,
    ),
    "[method]output-stream.splice": (
        (("self", _OS), ("src", _IS), ("len", "u64")),
        _U64_SE,
    ),
    "[method]output-stream.blocking-splice": (
        (("self", _OS), ("src", _IS), ("len", "u64")),
        _U64_SE,
    ),
}
_FORWARDED = LATIN1_FUNCS


def _sig(func: str, types: dict[str, str], *, latin1: bool = False) -> str:
    params, result = _SIGNATURES[func]
    parts = []
    for pname, ptype in params:
        if latin1:
            pname = "s" if pname == "self" else pname
            ptype = "string" if ptype == "(list u8)" else ptype
        parts.append(f'(param "{pname}" {ptype.format(**types)})')
    if latin1:
        result = result.replace("(list u8)", "string")
    return " ".join(parts) + " " + result.format(**types)


def _is_write(func: str) -> bool:
    return func.startswith("[method]output-stream.")


def bridge_wat(funcs: list[str]) -> str:
    """The bridge for a guest importing ``funcs`` of ``wasi:io/streams``.

    It imports ``error`` (``wasi:io/error``), ``poll`` (``wasi:io/poll``, only
    when a ``subscribe`` is among ``funcs``), ``streams`` (the host's) and
    ``latin1``, and exports ``streams``: the host's resource types, every one
    of ``funcs`` as the host's own function, and for each of them that moves
    bytes the ``fabric:io/latin1`` function under
    ``fabric-latin1-<name>``, which the rewritten guest lowers.
    """
    unknown = [f for f in funcs if f not in _SIGNATURES]
    if unknown:
        raise BuildError(f"wasi:io/streams functions unknown to the composer: {unknown}")
    poll = any(f.endswith(".subscribe") for f in funcs)
    latin1 = [f for f in funcs if f in _FORWARDED]
    local = {f: f"f{i}" for i, f in enumerate(funcs)}
    local_l1 = {f: f"l{i}" for i, f in enumerate(latin1)}
    inner = {"is": "$is", "os": "$os", "se": "$se2", "p": "$p2"}
    outer = {"is": "$is", "os": "$os", "se": "$se", "p": "$pollable"}
    shim_in = {"is": "$is", "os": "$os", "se": "$se", "p": "$p"}
    shim_out = {"is": "$is2", "os": "$os2", "se": "$se2", "p": "$p2"}
    w: list[str] = [
        "(component $bridge",
        '  (import "error" (instance $error-in (export "error" (type (sub resource)))))',
        '  (alias export $error-in "error" (type $error))',
    ]
    if poll:
        w += [
            '  (import "poll" (instance $poll-in (export "pollable" (type (sub resource)))))',
            '  (alias export $poll-in "pollable" (type $pollable))',
        ]
    w += [
        '  (import "streams" (instance $streams-in',
        "    (alias outer $bridge $error (type $e))",
        '    (export "error" (type $e2 (eq $e)))',
    ]
    if poll:
        w += [
            "    (alias outer $bridge $pollable (type $p))",
            '    (export "pollable" (type $p2 (eq $p)))',
        ]
    w += [
        '    (export "input-stream" (type $is (sub resource)))',
        '    (export "output-stream" (type $os (sub resource)))',
        '    (type $se (variant (case "last-operation-failed" (own $e2)) (case "closed")))',
        '    (export "stream-error" (type $se2 (eq $se)))',
    ]
    w += [f'    (export "{f}" (func {_sig(f, inner)}))' for f in funcs]
    w += [
        "  ))",
        '  (alias export $streams-in "input-stream" (type $is))',
        '  (alias export $streams-in "output-stream" (type $os))',
        '  (alias export $streams-in "stream-error" (type $se))',
    ]
    w += [f'  (alias export $streams-in "{f}" (func ${local[f]}))' for f in funcs]
    w += [
        '  (import "latin1" (instance $latin1',
        "    (alias outer $bridge $is (type $is))",
        "    (alias outer $bridge $os (type $os))",
        "    (alias outer $bridge $se (type $se))",
    ]
    w += [f'    (export "{_FORWARDED[f]}" (func {_sig(f, outer, latin1=True)}))' for f in latin1]
    w.append("  ))")
    w += [f'  (alias export $latin1 "{_FORWARDED[f]}" (func ${local_l1[f]}))' for f in latin1]
    # A component's exports name the types its functions use; an instance
    # built from loose exports cannot, so a shim re-exports the host's types
    # with the functions as one instance.
    w += ["  (component $shim", '    (import "error" (type $e (sub resource)))']
    if poll:
        w.append('    (import "pollable" (type $p (sub resource)))')
    w += [
        '    (import "input-stream" (type $is (sub resource)))',
        '    (import "output-stream" (type $os (sub resource)))',
        '    (type $se-def (variant (case "last-operation-failed" (own $e)) (case "closed")))',
        '    (import "stream-error" (type $se (eq $se-def)))',
    ]
    w += [f'    (import "{local[f]}" (func ${local[f]} {_sig(f, shim_in)}))' for f in funcs]
    w += [
        f'    (import "{local_l1[f]}" (func ${local_l1[f]} {_sig(f, shim_in, latin1=True)}))'
        for f in latin1
    ]
    w.append('    (export $e2 "error" (type $e))')
    if poll:
        w.append('    (export $p2 "pollable" (type $p))')
    w += [
        '    (export $is2 "input-stream" (type $is))',
        '    (export $os2 "output-stream" (type $os))',
        '    (type $se-local (variant (case "last-operation-failed" (own $e2)) (case "closed")))',
        '    (export $se2 "stream-error" (type $se-local))',
    ]
    w += [f'    (export "{f}" (func ${local[f]}) (func {_sig(f, shim_out)}))' for f in funcs]
    w += [
        f'    (export "{LATIN1_PREFIX}{_FORWARDED[f]}" (func ${local_l1[f]})'
        f" (func {_sig(f, shim_out, latin1=True)}))"
        for f in latin1
    ]
    w += ["  )", "  (instance $out (instantiate $shim", '    (with "error" (type $error))']
    if poll:
        w.append('    (with "pollable" (type $pollable))')
    w += [
        '    (with "input-stream" (type $is))',
        '    (with "output-stream" (type $os))',
        '    (with "stream-error" (type $se))',
    ]
    w += [f'    (with "{local[f]}" (func ${local[f]}))' for f in funcs]
    w += [f'    (with "{local_l1[f]}" (func ${local_l1[f]}))' for f in latin1]
    w += ["  ))", '  (export "streams" (instance $out))', ")", ""]
    return "\n".join(w)


def _latin1_instance_type(streams_types: int, forwarded: list[str]) -> bytes:
    """``fabric:io/latin1``'s instance type; its stream types are the outer's
    types ``streams_types`` (input-stream), +1 (output-stream), +2 (stream-error)."""
    outer = [b"\x02" + b"\x03\x02" + u32(1) + u32(streams_types + k) for k in range(3)]
    decls = [
        *outer,  # 0 input-stream, 1 output-stream, 2 stream-error
        b"\x01\x68\x01",  # 3 borrow<output-stream>
        b"\x01\x68\x00",  # 4 borrow<input-stream>
        b"\x01\x6a\x00\x01\x02",  # 5 result<_, stream-error>
        b"\x01\x6a\x01\x73\x01\x02",  # 6 result<string, stream-error>
        b"\x01\x40" + vec([name("s") + b"\x03", name("contents") + b"\x73"]) + b"\x00\x05",  # 7
        b"\x01\x40" + vec([name("s") + b"\x04", name("len") + b"\x77"]) + b"\x00\x06",  # 8
    ]
    decls += [
        b"\x04\x00" + name(_FORWARDED[f]) + b"\x01" + (b"\x07" if _is_write(f) else b"\x08")
        for f in forwarded
    ]
    return b"\x42" + vec(decls)


def _sortidx(sort: int, index: int) -> bytes:
    return (b"\x00\x11" if sort == SORT_CORE else bytes([sort])) + u32(index)


def stream_funcs(shape: ComponentShape) -> list[str]:
    """The functions of ``wasi:io/streams`` the component imports, in its order."""
    streams = shape.import_named("wasi:io/streams")
    if streams is None or streams.sort != SORT_INSTANCE or streams.type_index is None:
        raise BuildError("the guest does not import wasi:io/streams, so there is nothing to adapt")
    exports = shape.instance_types.get(streams.type_index)
    if exports is None:
        raise BuildError("the guest's wasi:io/streams import has a type this composer cannot read")
    return [n for n, sort in exports if sort == 0x01]


def compose_fast_bytes(guest: bytes, bridge: bytes, shape: ComponentShape | None = None) -> bytes:
    """The outer component joining ``guest``, rewritten, and ``bridge`` (built
    from :func:`bridge_wat` for this guest); see the module's description.
    ``shape`` is ``read_component(guest)`` when the caller has it."""
    try:
        if shape is None:
            shape = read_component(guest)
        rewritten, _ = redirect_stream_lowerings(guest, shape)
    except ComponentBinaryError as exc:
        raise BuildError(f"cannot compose this guest: {exc}") from exc
    funcs = stream_funcs(shape)
    needed = {"wasi:io/error": True, "wasi:io/poll": any(f.endswith(".subscribe") for f in funcs)}
    found = {}
    for iface, required in needed.items():
        imp = shape.import_named(iface)
        if imp is None or imp.sort != SORT_INSTANCE:
            if required:
                raise BuildError(f"the guest imports wasi:io/streams but not {iface}")
            continue
        found[iface] = imp.index
    if shape.import_named("fabric:io/latin1") is not None:
        raise BuildError("the guest already imports fabric:io/latin1")
    streams = shape.import_named("wasi:io/streams")
    assert streams is not None
    forwarded = [f for f in funcs if f in _FORWARDED]
    types = shape.counts.get(SORT_TYPE, 0)
    instances = shape.counts.get(SORT_INSTANCE, 0)
    components = shape.counts.get(0x04, 0)
    out = [PREAMBLE, guest[len(PREAMBLE) : shape.prefix_end]]
    # the streams' types, as the outer's types `types` .. `types + 2`
    out.append(section(SECTION_ALIAS, vec([
        b"\x03\x00" + u32(streams.index) + name(n)
        for n in ("input-stream", "output-stream", "stream-error")
    ])))  # fmt: skip
    out.append(section(SECTION_TYPE, vec([_latin1_instance_type(types, forwarded)])))
    out.append(section(SECTION_IMPORT, vec([
        b"\x00" + name(LATIN1_IMPORT) + b"\x05" + u32(types + 3)
    ])))  # fmt: skip
    latin1 = instances
    out.append(section(SECTION_COMPONENT, bridge))
    args = [name("error") + _sortidx(SORT_INSTANCE, found["wasi:io/error"])]
    if "wasi:io/poll" in found:
        args.append(name("poll") + _sortidx(SORT_INSTANCE, found["wasi:io/poll"]))
    args += [
        name("streams") + _sortidx(SORT_INSTANCE, streams.index),
        name("latin1") + _sortidx(SORT_INSTANCE, latin1),
    ]
    out.append(section(SECTION_INSTANCE, vec([b"\x00" + u32(components) + vec(args)])))
    bridge_instance = latin1 + 1
    out.append(section(SECTION_ALIAS, vec([
        b"\x05\x00" + u32(bridge_instance) + name("streams")
    ])))  # fmt: skip
    adapted = latin1 + 2
    out.append(section(SECTION_COMPONENT, rewritten))
    guest_args = [
        name(imp.name) + _sortidx(imp.sort, adapted if imp is streams else imp.index)
        for imp in shape.imports
    ]
    out.append(section(SECTION_INSTANCE, vec([b"\x00" + u32(components + 1) + vec(guest_args)])))
    guest_instance = latin1 + 3
    counts = {SORT_INSTANCE: guest_instance + 1}
    aliases, exports = [], []
    for export in shape.exports:
        if export.sort == SORT_CORE:
            raise BuildError(f"cannot re-export core export {export.name!r}")
        index = counts.get(export.sort, shape.counts.get(export.sort, 0))
        counts[export.sort] = index + 1
        aliases.append(bytes([export.sort]) + b"\x00" + u32(guest_instance) + name(export.name))
        exports.append(b"\x00" + name(export.name) + _sortidx(export.sort, index) + b"\x00")
    out.append(section(SECTION_ALIAS, vec(aliases)))
    out.append(section(SECTION_EXPORT, vec(exports)))
    return b"".join(out)


def build_fast_bytes_guest(guest: Path | str) -> Path:
    """The guest at ``guest`` with its streams over ``fabric:io/latin1``, cached.

    Raises :class:`~fabric.build.BuildError` when the guest cannot be composed
    (it does not import ``wasi:io/streams``, or its binary opens with sections
    this composer does not read).
    """
    path = Path(guest)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc}") from exc
    digest = hashlib.sha256()
    digest.update(f"fast-bytes\0{_KEY_VERSION}\0".encode())
    digest.update(data)
    key = digest.hexdigest()[:32]
    guests = cache_dir() / "guests"
    out = guests / f"{path.stem[:40]}-latin1-{key}.wasm"
    if out.is_file():
        return out
    try:
        shape = read_component(data)
        bridge = build_wat_guest(bridge_wat(stream_funcs(shape))).read_bytes()
        composed = compose_fast_bytes(data, bridge, shape)
    except (BuildError, ComponentBinaryError) as exc:
        raise BuildError(f"fast_bytes: cannot compose {path}: {exc}") from exc
    guests.mkdir(parents=True, exist_ok=True)
    write_cached(out, composed, key)
    return out
