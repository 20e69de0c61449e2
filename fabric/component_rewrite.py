"""Point a guest's own stream lowerings at latin-1 string functions (sans-IO).

A guest lowers ``wasi:io/streams`` ``write`` (and ``blocking-write-and-flush``)
to a core function ``(handle, ptr, len, retptr)`` and ``read`` (and
``blocking-read``) to ``(handle, len, retptr)`` whose result holds
``(ptr, len)``. Lowered with ``string-encoding=latin1+utf16``, a function
taking or returning a ``string`` instead of the ``list<u8>`` has the very
same core signature, and a byte 0-255 is one latin-1 code unit: the bytes in
the guest's memory *are* the string. :func:`redirect_stream_lowerings`
rewrites a guest binary so that

* the instance type of its ``wasi:io/streams`` import also declares
  ``fabric-latin1-write``, ``fabric-latin1-read`` (and the blocking forms it
  uses), taking and returning ``string``;
* each alias of one of those stream functions from that import names the
  ``fabric-latin1-`` function instead, and
* each ``canon lower`` of such an alias gets ``string-encoding=latin1+utf16``.

Nothing else moves: no index of any kind changes, so every other section is
copied as it is. Whoever instantiates the rewritten guest gives it a streams
instance holding those extra functions (:mod:`fabric.compose`).
"""

from __future__ import annotations

from fabric.component_binary import (
    PREAMBLE,
    SECTION_ALIAS,
    SECTION_CANON,
    SECTION_EXPORT,
    SECTION_IMPORT,
    SECTION_TYPE,
    SORT_FUNC,
    SORT_INSTANCE,
    SORT_TYPE,
    ComponentBinaryError,
    ComponentShape,
    Reader,
    name,
    section,
    sections,
    u32,
    vec,
)

__all__ = ["LATIN1_FUNCS", "LATIN1_PREFIX", "redirect_stream_lowerings"]

#: the name the guest's streams instance gives each latin-1 function
LATIN1_PREFIX = "fabric-latin1-"
#: stream function -> the fabric:io/latin1 function taking its place
LATIN1_FUNCS = {
    "[method]output-stream.write": "write",
    "[method]output-stream.blocking-write-and-flush": "blocking-write-and-flush",
    "[method]input-stream.read": "read",
    "[method]input-stream.blocking-read": "blocking-read",
}

_LATIN1_UTF16 = 0x02  # canonopt string-encoding=latin1+utf16
_STRING_ENCODINGS = (0x00, 0x01, 0x02)


def _with_latin1_exports(data: bytes, start: int, end: int, funcs: list[str]) -> bytes:
    """The streams instance type at ``data[start:end]`` with the latin-1
    functions replacing ``funcs`` declared after its own exports."""
    reader = Reader(data, start, end)
    if reader.byte() != 0x42:
        raise ComponentBinaryError("the wasi:io/streams import is not typed by an instance type")
    count = reader.u32()
    decls_start = reader.pos
    local = 0  # the instance type's own type index space
    named: dict[str, int] = {}
    for _ in range(count):
        kind = reader.byte()
        if kind == 0x01:
            reader.deftype()
            local += 1
        elif kind == 0x02:
            local += reader.alias() == SORT_TYPE
        elif kind == 0x04:
            export = reader.externname()
            if reader.externdesc()[0] == SORT_TYPE:
                named[export] = local
                local += 1
        else:
            raise reader.fail(f"unsupported declaration {kind:#x} in the streams type")
    try:
        os_, is_, se = named["output-stream"], named["input-stream"], named["stream-error"]
    except KeyError as exc:
        raise ComponentBinaryError(f"the wasi:io/streams type exports no {exc}") from None
    write_fn, read_fn = local + 4, local + 5
    extra = [
        b"\x01\x68" + u32(os_),  # local: borrow<output-stream>
        b"\x01\x68" + u32(is_),  # local + 1: borrow<input-stream>
        b"\x01\x6a\x00\x01" + u32(se),  # local + 2: result<_, stream-error>
        b"\x01\x6a\x01\x73\x01" + u32(se),  # local + 3: result<string, stream-error>
        b"\x01\x40"
        + vec([name("s") + u32(local), name("contents") + b"\x73"])
        + b"\x00"
        + u32(local + 2),
        b"\x01\x40" + vec([name("s") + u32(local + 1), name("len") + b"\x77"]) + b"\x00"
        + u32(local + 3),
    ]  # fmt: skip
    extra += [
        b"\x04\x00"
        + name(LATIN1_PREFIX + LATIN1_FUNCS[f])
        + b"\x01"
        + u32(write_fn if f.startswith("[method]output-stream.") else read_fn)
        for f in funcs
    ]
    return b"\x42" + u32(count + len(extra)) + bytes(data[decls_start:end]) + b"".join(extra)


def _canonopts(reader: Reader) -> list[tuple[int, int | None]]:
    opts: list[tuple[int, int | None]] = []
    for _ in range(reader.u32()):
        opt = reader.byte()
        if opt in (0x03, 0x04, 0x05, 0x07):  # memory, realloc, post-return, callback
            opts.append((opt, reader.u32()))
        elif opt in (*_STRING_ENCODINGS, 0x06):  # string encodings, async
            opts.append((opt, None))
        else:
            raise reader.fail(f"unsupported canonical option {opt:#x}")
    return opts


def redirect_stream_lowerings(data: bytes, shape: ComponentShape) -> tuple[bytes, list[str]]:
    """``data`` (whose :func:`~fabric.component_binary.read_component` is
    ``shape``) rewritten as the module describes, and the stream functions
    redirected. Raises :class:`ComponentBinaryError` on what it cannot read."""
    streams = shape.import_named("wasi:io/streams")
    if streams is None or streams.sort != SORT_INSTANCE or streams.type_index is None:
        raise ComponentBinaryError("no wasi:io/streams instance import")
    declared = [n for n, sort in shape.instance_types.get(streams.type_index, []) if sort == 1]
    funcs = [f for f in declared if f in LATIN1_FUNCS]
    out = [PREAMBLE]
    types = funcs_seen = 0
    redirected: set[int] = set()  # component function indices of the renamed aliases
    for section_id, start, payload, end in sections(data):
        reader = Reader(data, payload, end)
        entries: list[bytes] = []
        changed = False
        if section_id == SECTION_TYPE and end <= shape.prefix_end:
            for _ in range(reader.u32()):
                first = reader.pos
                reader.deftype()
                if types == streams.type_index:
                    entries.append(_with_latin1_exports(data, first, reader.pos, funcs))
                    changed = True
                else:
                    entries.append(bytes(data[first : reader.pos]))
                types += 1
        elif section_id == SECTION_TYPE:
            types += reader.u32()
        elif section_id == SECTION_IMPORT:
            for _ in range(reader.u32()):
                reader.externname()
                kind = reader.externdesc()[0]
                types += kind == SORT_TYPE
                funcs_seen += kind == SORT_FUNC
        elif section_id == SECTION_ALIAS:
            for _ in range(reader.u32()):
                first = reader.pos
                alias_sort = reader.sort()
                target = reader.byte()
                if target == 0x00:
                    instance, alias_name = reader.u32(), reader.string()
                    if (
                        alias_sort == SORT_FUNC
                        and instance == streams.index
                        and alias_name in funcs
                    ):
                        entries.append(
                            b"\x01\x00"
                            + u32(instance)
                            + name(LATIN1_PREFIX + LATIN1_FUNCS[alias_name])
                        )
                        redirected.add(funcs_seen)
                        changed = True
                        funcs_seen += 1
                        continue
                elif target == 0x01:
                    reader.u32()
                    reader.string()
                else:
                    reader.u32()
                    reader.u32()
                entries.append(bytes(data[first : reader.pos]))
                types += alias_sort == SORT_TYPE
                funcs_seen += alias_sort == SORT_FUNC
        elif section_id == SECTION_CANON:
            for _ in range(reader.u32()):
                first = reader.pos
                op = reader.byte()
                if op in (0x00, 0x01) and reader.byte() != 0x00:
                    raise reader.fail("bad canon lift/lower")
                if op == 0x00:  # lift: a component function
                    reader.u32()
                    _canonopts(reader)
                    reader.u32()
                    funcs_seen += 1
                elif op == 0x01:  # lower: a core function
                    func = reader.u32()
                    opts = _canonopts(reader)
                    if func in redirected:
                        opts = [o for o in opts if o[0] not in _STRING_ENCODINGS]
                        opts.append((_LATIN1_UTF16, None))
                        encoded = [bytes([o]) + (b"" if v is None else u32(v)) for o, v in opts]
                        entries.append(b"\x01\x00" + u32(func) + vec(encoded))
                        changed = True
                        continue
                elif op in (0x02, 0x03, 0x04):  # resource.new, .drop, .rep
                    reader.u32()
                else:
                    raise reader.fail(f"unsupported canonical function {op:#x}")
                entries.append(bytes(data[first : reader.pos]))
        elif section_id == SECTION_EXPORT:
            for _ in range(reader.u32()):  # an export adds an index of its sort
                reader.externname()
                sort = reader.sort()
                reader.u32()
                if reader.optional():
                    reader.externdesc()
                types += sort == SORT_TYPE
                funcs_seen += sort == SORT_FUNC
        out.append(section(section_id, vec(entries)) if changed else bytes(data[start:end]))
    return b"".join(out), funcs
