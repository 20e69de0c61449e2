"""Read and write the top level of a WebAssembly component binary (sans-IO).

Just enough of the component model's binary format (``Binary.md``) to compose
components without a text round trip: the preamble, the sections (an id byte,
a LEB128 size, the payload), and the entries of the sections that make index
space entries before a component's code starts (types, imports, aliases),
which :func:`read_component` walks to learn what each import is and which
index it takes. Type definitions are read only to find where each ends and,
for instance types, which names they export. Exports are read for their
names and sorts.

Everything is pure: bytes in, plain data out, and byte strings for the
sections :mod:`fabric.compose` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabric.errors import FabricError

__all__ = [
    "PREAMBLE",
    "ComponentBinaryError",
    "ComponentShape",
    "Export",
    "Import",
    "Reader",
    "name",
    "read_component",
    "section",
    "sections",
    "u32",
    "vec",
]

#: ``\0asm``, version 0x0d, layer 1: a component (a core module has layer 0).
PREAMBLE = b"\x00asm\x0d\x00\x01\x00"

SECTION_CUSTOM = 0
SECTION_CORE_MODULE = 1
SECTION_CORE_INSTANCE = 2
SECTION_CORE_TYPE = 3
SECTION_COMPONENT = 4
SECTION_INSTANCE = 5
SECTION_ALIAS = 6
SECTION_TYPE = 7
SECTION_CANON = 8
SECTION_START = 9
SECTION_IMPORT = 10
SECTION_EXPORT = 11

# component sorts (sortidx, externdesc kinds)
SORT_CORE = 0x00
SORT_FUNC = 0x01
SORT_VALUE = 0x02
SORT_TYPE = 0x03
SORT_COMPONENT = 0x04
SORT_INSTANCE = 0x05

# bool .. string (0x7f .. 0x73) and error-context (0x64): one byte each
_PRIMITIVES = frozenset((0x64, *range(0x73, 0x80)))


class ComponentBinaryError(FabricError):
    """The bytes are not a component this reader understands."""


@dataclass(frozen=True)
class Import:
    """A top-level import: its name, its sort and the index it took in that sort."""

    name: str
    sort: int
    index: int
    #: for an instance or function import: the type index of its declared type
    type_index: int | None


@dataclass(frozen=True)
class Export:
    """A top-level export: its name and the sort of what it exports."""

    name: str
    sort: int


@dataclass
class ComponentShape:
    """What :func:`read_component` learned about a component binary."""

    #: end offset of the last import section: sections before it are only
    #: types, imports and aliases, so they can open another component as is
    prefix_end: int = len(PREAMBLE)
    imports: list[Import] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    #: index-space sizes at ``prefix_end``, by sort (core sorts as ``(0, core sort)``)
    counts: dict[int | tuple[int, int], int] = field(default_factory=dict)
    #: type index -> export names of an instance type defined in the prefix
    instance_types: dict[int, list[tuple[str, int]]] = field(default_factory=dict)

    def import_named(self, prefix: str) -> Import | None:
        """The import whose name is ``prefix`` or ``prefix@<version>``."""
        for imp in self.imports:
            if imp.name == prefix or imp.name.startswith(prefix + "@"):
                return imp
        return None


# -- encoding --------------------------------------------------------------


def u32(value: int) -> bytes:
    """Unsigned LEB128."""
    if value < 0:
        raise ValueError(value)
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def name(text: str) -> bytes:
    """A length-prefixed UTF-8 string."""
    data = text.encode()
    return u32(len(data)) + data


def vec(items: list[bytes]) -> bytes:
    return u32(len(items)) + b"".join(items)


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + u32(len(payload)) + payload


# -- decoding --------------------------------------------------------------


class Reader:
    """Reads LEB128 numbers, names and the component model's type grammar from
    ``data[pos:end]``, raising :class:`ComponentBinaryError` on what it cannot read."""

    def __init__(self, data: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def fail(self, what: str) -> ComponentBinaryError:
        return ComponentBinaryError(f"component binary, offset {self.pos}: {what}")

    def byte(self) -> int:
        if self.pos >= self.end:
            raise self.fail("unexpected end")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u32(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 35:
                raise self.fail("LEB128 too long")

    def string(self) -> str:
        length = self.u32()
        if self.pos + length > self.end:
            raise self.fail("string runs past its section")
        raw = bytes(self.data[self.pos : self.pos + length])
        self.pos += length
        return raw.decode()

    def optional(self) -> bool:
        flag = self.byte()
        if flag not in (0, 1):
            raise self.fail(f"bad optional flag {flag:#x}")
        return flag == 1

    # -- types ----------------------------------------------------------------
    def valtype(self) -> None:
        # an s33: one byte 0x40-0x7f is negative, a primitive; else a type index
        first = self.data[self.pos] if self.pos < self.end else -1
        if 0x40 <= first < 0x80:
            if first not in _PRIMITIVES:
                raise self.fail(f"unknown primitive type {first:#x}")
            self.pos += 1
        else:
            self.u32()

    def labelled_valtypes(self) -> None:
        for _ in range(self.u32()):
            self.string()
            self.valtype()

    def defvaltype(self, tag: int) -> None:
        if tag in _PRIMITIVES:
            return
        if tag == 0x72:  # record
            self.labelled_valtypes()
        elif tag == 0x71:  # variant
            for _ in range(self.u32()):
                self.string()
                if self.optional():
                    self.valtype()
                if self.optional():  # refines (obsolete), or the trailing 0x00
                    self.u32()
        elif tag in (0x70, 0x6B):  # list, option
            self.valtype()
        elif tag == 0x6F:  # tuple
            for _ in range(self.u32()):
                self.valtype()
        elif tag in (0x6E, 0x6D):  # flags, enum
            for _ in range(self.u32()):
                self.string()
        elif tag == 0x6A:  # result
            if self.optional():
                self.valtype()
            if self.optional():
                self.valtype()
        elif tag in (0x69, 0x68):  # own, borrow
            self.u32()
        elif tag == 0x67:  # fixed-size list
            self.valtype()
            self.u32()
        elif tag in (0x66, 0x65):  # stream, future
            if self.optional():
                self.valtype()
        else:
            raise self.fail(f"unsupported type tag {tag:#x}")

    def functype(self) -> None:
        self.labelled_valtypes()
        results = self.byte()
        if results == 0x00:
            self.valtype()
        elif results == 0x01:
            self.labelled_valtypes()
        else:
            raise self.fail(f"bad result list {results:#x}")

    def deftype(self) -> list[tuple[str, int]] | None:
        """Skip one type definition; an instance type's exports are returned."""
        tag = self.byte()
        if tag in (0x40, 0x43):  # func, async func
            self.functype()
        elif tag == 0x41:  # component type
            self.decls(component=True)
        elif tag == 0x42:  # instance type
            return self.decls(component=False)
        elif tag == 0x3F:  # resource
            if self.byte() != 0x7F:
                raise self.fail("resource representation other than i32")
            if self.optional():
                self.u32()
        else:
            self.defvaltype(tag)
        return None

    def decls(self, *, component: bool) -> list[tuple[str, int]]:
        exports: list[tuple[str, int]] = []
        for _ in range(self.u32()):
            kind = self.byte()
            if kind == 0x01:
                self.deftype()
            elif kind == 0x02:
                self.alias()
            elif kind == 0x04:
                exports.append((self.externname(), self.externdesc()[0]))
            elif kind == 0x03 and component:
                self.externname()
                self.externdesc()
            else:
                raise self.fail(f"unsupported declaration {kind:#x} in a type")
        return exports

    # -- imports, exports, aliases ----------------------------------------------
    def externname(self) -> str:
        kind = self.byte()
        text = self.string()
        if kind == 0x01:
            self.string()  # version suffix
        elif kind != 0x00:
            raise self.fail(f"bad extern name {kind:#x}")
        return text

    def externdesc(self) -> tuple[int, int | None]:
        """``(sort, type index or None)``; core modules are ``SORT_CORE``."""
        kind = self.byte()
        if kind == 0x00:
            if self.byte() != 0x11:
                raise self.fail("core extern other than a module")
            return SORT_CORE, self.u32()
        if kind in (SORT_FUNC, SORT_COMPONENT, SORT_INSTANCE):
            return kind, self.u32()
        if kind == SORT_VALUE:
            if self.byte() == 0x00:
                self.u32()
            else:
                self.valtype()
            return kind, None
        if kind == SORT_TYPE:
            bound = self.byte()
            if bound == 0x00:
                return kind, self.u32()
            if bound == 0x01:
                return kind, None
            raise self.fail(f"bad type bound {bound:#x}")
        raise self.fail(f"bad extern kind {kind:#x}")

    def sort(self) -> int | tuple[int, int]:
        kind = self.byte()
        if kind == SORT_CORE:
            return (SORT_CORE, self.byte())
        if kind not in (SORT_FUNC, SORT_VALUE, SORT_TYPE, SORT_COMPONENT, SORT_INSTANCE):
            raise self.fail(f"bad sort {kind:#x}")
        return kind

    def alias(self) -> int | tuple[int, int]:
        sort = self.sort()
        target = self.byte()
        if target in (0x00, 0x01):  # export of an instance / core instance
            self.u32()
            self.string()
        elif target == 0x02:  # outer
            self.u32()
            self.u32()
        else:
            raise self.fail(f"bad alias target {target:#x}")
        return sort


def sections(data: bytes | memoryview) -> list[tuple[int, int, int, int]]:
    """``(id, section start, payload start, end)`` of every top-level section."""
    if bytes(data[: len(PREAMBLE)]) != PREAMBLE:
        raise ComponentBinaryError("not a component binary (bad preamble)")
    reader = Reader(data, len(PREAMBLE))
    out = []
    while reader.pos < reader.end:
        start = reader.pos
        section_id = reader.byte()
        size = reader.u32()
        payload = reader.pos
        reader.pos += size
        if reader.pos > reader.end:
            raise ComponentBinaryError(f"section {section_id} at {start} runs past the end")
        out.append((section_id, start, payload, reader.pos))
    return out


def read_component(data: bytes | memoryview) -> ComponentShape:
    """The imports (with their indices) and exports of a component binary.

    Raises :class:`ComponentBinaryError` when the sections before the last
    import are anything but types, imports, aliases and custom sections.
    """
    found = sections(data)
    last_import = max((i for i, s in enumerate(found) if s[0] == SECTION_IMPORT), default=-1)
    shape = ComponentShape()
    counts = shape.counts

    def take(sort: int | tuple[int, int]) -> int:
        index = counts.get(sort, 0)
        counts[sort] = index + 1
        return index

    for position, (section_id, _start, payload, end) in enumerate(found):
        reader = Reader(data, payload, end)
        if section_id == SECTION_EXPORT:
            for _ in range(reader.u32()):
                export_name = reader.externname()
                sort = reader.sort()
                reader.u32()
                if reader.optional():
                    reader.externdesc()
                shape.exports.append(
                    Export(export_name, sort if isinstance(sort, int) else SORT_CORE)
                )
            continue
        if position > last_import:
            continue
        if section_id == SECTION_CUSTOM:
            continue
        if section_id == SECTION_TYPE:
            for _ in range(reader.u32()):
                exports = reader.deftype()
                index = take(SORT_TYPE)
                if exports is not None:
                    shape.instance_types[index] = exports
        elif section_id == SECTION_IMPORT:
            for _ in range(reader.u32()):
                import_name = reader.externname()
                sort, type_index = reader.externdesc()
                key: int | tuple[int, int] = (SORT_CORE, 0x11) if sort == SORT_CORE else sort
                shape.imports.append(Import(import_name, sort, take(key), type_index))
        elif section_id == SECTION_ALIAS:
            for _ in range(reader.u32()):
                take(reader.alias())
        else:
            raise ComponentBinaryError(
                f"section {section_id} before the last import: only types, imports "
                "and aliases can open a component that is composed"
            )
        if reader.pos != end:
            raise ComponentBinaryError(f"section {section_id} at {payload}: trailing bytes")
        shape.prefix_end = end
    return shape
