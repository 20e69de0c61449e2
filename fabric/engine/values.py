"""Marshaling of component values between wasmtime's ``val_t`` and Python.

A component type is compiled once into a tree of ``Codec`` objects; each codec
lifts a ``wasmtime_component_val_t`` into a Python value and lowers a Python
value into one.  Python representation:

============================  ===============================================
component type                Python value
============================  ===============================================
bool, integers, floats        ``bool``, ``int``, ``float``
char                          ``str`` of length 1
string                        ``str``
``list<u8>``                  ``bytes`` (copied in bulk, never per element)
``list<T>``                   ``list``
record                        ``dict`` of field name to value
tuple                         ``tuple``
variant                       ``(case_name, payload_or_None)``
enum                          ``str`` (the case name)
option                        ``None`` or the value
result                        :class:`Ok` / :class:`Err` (a host function may
                              also return the bare ok value, or raise ``Err``)
flags                         ``frozenset`` of the names that are set
own / borrow of a host type   the Python object the host created
============================  ===============================================

Lowered values are built only from memory that wasmtime allocated (``*_new``
functions), as the C API requires for host results.
"""

from __future__ import annotations

import ctypes
import math
import struct
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from wasmtime.component import _types as wt

from . import _capi as c

if TYPE_CHECKING:
    from collections.abc import Sequence

_string_at = ctypes.string_at
_byref = ctypes.byref
_memset = c.memset


def _zero(addr: int, n: int, size: int) -> None:
    # Uninitialised elements become Bool(false) (or empty names), so that a
    # lowering that fails half-way leaves a value wasmtime can safely drop.
    if n:
        _memset(addr, 0, n * size)


_VAL = c.VAL
_VAL_SIZE = c.VAL_SIZE
_VAL_at = c.VAL.from_address
_ptr_at = ctypes.c_void_p.from_address
_size_at = ctypes.c_size_t.from_address
_addressof = ctypes.addressof
_val_new = c.raw_val_new
_vallist_new = c.raw_vallist_new
_byte_vec_new = c.raw_byte_vec_new
_u8_at = ctypes.c_uint8.from_address


# Views of a value's leading fields, for writing them in place (a view from
# an address costs less than a C call such as memmove).
class _ResultHead(ctypes.Structure):
    _fields_ = (
        ("kind", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 7),
        ("is_ok", ctypes.c_bool),
        ("val", ctypes.c_void_p),
    )


class _PointerHead(ctypes.Structure):
    """kind, then a pointer (a resource handle)."""

    _fields_ = (("kind", ctypes.c_uint8), ("ptr", ctypes.c_void_p))


class _ListHead(ctypes.Structure):
    _fields_ = (
        ("kind", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 7),
        ("size", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
    )


_list_at = _ListHead.from_address
_ONE_BYTE = [bytes((i,)) for i in range(256)]
#: the 32-byte ``u8`` value of each byte
_U8_VALS = [bytes((c.K_U8,)) + bytes(7) + bytes((i,)) + bytes(23) for i in range(256)]
_result_at = _ResultHead.from_address
_pointer_at = _PointerHead.from_address
_any_to_host = c.raw_any_to_host
_host_to_any = c.raw_host_to_any
_host_new = c.raw_host_new
_host_rep = c.raw_host_rep
_host_delete = c.raw_host_delete
#: Where the library's layout allows it (``c.HOST_BOX_IN_PLACE``), a borrowed
#: or owned handle's rep is read from the box ``any_to_host`` returns, and a
#: handle is handed to a guest from this one owned box, its rep and type
#: rewritten in place: one C call per handle instead of three.
_IN_PLACE = c.HOST_BOX_IN_PLACE
_OWN_BOX = _host_new(True, 0, 0) if _IN_PLACE else 0
_OWN_BOX_FIELDS = c.HostBoxFields.from_address(_OWN_BOX) if _IN_PLACE else None
_OWN_BOX_P = ctypes.c_void_p(_OWN_BOX)
#: views of the boxes ``any_to_host`` returned, by address: malloc hands the
#: same few addresses out again and again (each box is freed at once)
_BOX_VIEWS: dict[int, Any] = {}
_box_view = c.HostBoxFields.from_address


def _new_box_view(host: int) -> Any:
    if len(_BOX_VIEWS) >= 64:
        _BOX_VIEWS.clear()
    view = _BOX_VIEWS[host] = _box_view(host)
    return view


class Ok:
    """The ok case of a ``result``."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Ok({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ok) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


class Err(Exception):
    """The error case of a ``result``.

    A host function whose WIT result is ``result<T, E>`` returns ``T`` and
    raises ``Err(e)`` to give the guest its error value.
    """

    def __init__(self, value: Any = None) -> None:
        super().__init__(value)
        self.value = value

    def __repr__(self) -> str:
        return f"Err({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Err) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


class HostResource:
    """Base of every Python object handed to a guest as a resource.

    ``resource_tag`` identifies the resource type; ``close()`` is called when
    the guest drops its handle (or when the store goes away).
    """

    resource_tag: int = 0

    def close(self) -> None:
        """Release what the resource holds; the default holds nothing."""

    def drop(self) -> None:
        """The guest dropped its handle (may refuse by raising, which traps)."""
        self.close()


class ResourceScope(Protocol):
    """What codecs need from a store to move resources across the boundary."""

    #: the store's context for resource conversions, as a ``c_void_p``
    cx: Any

    def ctx(self) -> Any: ...

    def lookup(self, rep: int) -> Any: ...

    def take(self, rep: int) -> Any: ...

    def insert(self, obj: HostResource) -> int: ...


def _set_name(target: Any, data: bytes) -> None:
    _byte_vec_new(_addressof(target), len(data), data)


def _get_name(name: Any) -> str:
    return _string_at(name.data, name.size).decode("utf-8")


class Codec:
    """Lifts and lowers one component type."""

    kind: int = -1
    _scratch = 0  # address of the value ``box`` lowers into (0: none yet)
    _scratch_val: Any = None

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        raise NotImplementedError

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        raise NotImplementedError

    # The host-call trampolines hand codecs the address of a 32-byte value
    # (a parameter, the result slot); codecs on the hot path read and write
    # it in place, the others go through the ctypes structure.
    def lift_at(self, addr: int, scope: ResourceScope) -> Any:
        return self.lift(_VAL_at(addr), scope)

    def lower_at(self, value: Any, addr: int, scope: ResourceScope) -> None:
        self.lower(value, _VAL_at(addr), scope)

    def box(self, value: Any, scope: ResourceScope) -> int:
        """``value`` lowered into a value wasmtime allocated (an option's,
        result's or variant's payload); its address.

        Lowered first into this codec's own scratch value, which
        ``val_new`` moves out of (a codec is a node of one type's tree, so
        a box never nests inside a box of the same codec)."""
        scratch = self._scratch
        if not scratch:
            self._scratch_val = _VAL()
            scratch = self._scratch = _addressof(self._scratch_val)
        else:
            _memset(scratch, 0, _VAL_SIZE)
        self.lower_at(value, scratch, scope)
        return _val_new(scratch)  # type: ignore[no-any-return]


class BoolCodec(Codec):
    kind = c.K_BOOL

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        return bool(val.of.boolean)

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        val.kind = c.K_BOOL
        val.of.boolean = bool(value)


class IntCodec(Codec):
    def __init__(self, kind: int, field: str, lo: int, hi: int) -> None:
        self.kind, self.field, self.lo, self.hi = kind, field, lo, hi
        self._at = _INT_AT[field]
        # the whole 32-byte value: kind, padding, the integer, padding
        self._pack = struct.Struct(f"<B7x{_INT_FORMAT[field]}").pack
        self._head_at = _INT_HEAD[field].from_address
        self._pad = b"\0" * (24 - struct.calcsize(_INT_FORMAT[field]))
        #: the packed values of 0..63 (list indexes, such as ``poll``'s result)
        self._small = [self._pack(kind, i) + self._pad for i in range(64)]

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        return getattr(val.of, self.field)

    def lift_at(self, addr: int, scope: ResourceScope) -> Any:
        return self._at(addr + 8).value

    def lower_at(self, value: Any, addr: int, scope: ResourceScope) -> None:
        if not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise TypeError(f"expected an integer in [{self.lo}, {self.hi}], got {value!r}")
        head = self._head_at(addr)
        head.kind = self.kind
        head.value = value

    def packed(self, value: Any) -> bytes:
        """The whole 32-byte value holding ``value``, for copying functions
        only (``vallist_new``): small values are shared."""
        if type(value) is int and 0 <= value < 64:
            return self._small[value]
        if not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise TypeError(f"expected an integer in [{self.lo}, {self.hi}], got {value!r}")
        return self._pack(self.kind, value) + self._pad

    def box(self, value: Any, scope: ResourceScope) -> int:
        # A fresh buffer, never a shared one: ``val_new`` moves the value out
        # and leaves Bool(false) in its place.
        if not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise TypeError(f"expected an integer in [{self.lo}, {self.hi}], got {value!r}")
        return _val_new(self._pack(self.kind, value) + self._pad)  # type: ignore[no-any-return]

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        if not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise TypeError(f"expected an integer in [{self.lo}, {self.hi}], got {value!r}")
        val.kind = self.kind
        setattr(val.of, self.field, value)


class FloatCodec(Codec):
    def __init__(self, kind: int, field: str) -> None:
        self.kind, self.field = kind, field

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        return getattr(val.of, self.field)

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        val.kind = self.kind
        setattr(val.of, self.field, float(value))


class CharCodec(Codec):
    kind = c.K_CHAR

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        return chr(val.of.character)

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        code = ord(value)
        # An invalid scalar value makes wasmtime abort the process: refuse it here.
        if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            raise ValueError(f"not a Unicode scalar value: U+{code:04X}")
        val.kind = c.K_CHAR
        val.of.character = code


class StringCodec(Codec):
    kind = c.K_STRING

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        s = val.of.string
        return _string_at(s.data, s.size).decode("utf-8")

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")
        # str.encode always yields valid UTF-8 (lone surrogates raise here).
        data = value.encode("utf-8")
        val.kind = c.K_STRING
        _byte_vec_new(_addressof(val) + 8, len(data), data)


class BytesCodec(Codec):
    """``list<u8>``: copied with strided slices over the 32-byte values."""

    kind = c.K_LIST
    _CHUNK = 16384

    def __init__(self) -> None:
        self._template = bytearray()
        self._template_addr = 0

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        return self.lift_at(ctypes.addressof(val), scope)

    def lift_at(self, addr: int, scope: ResourceScope) -> Any:
        head = _list_at(addr)
        n = head.size
        if n == 0:
            return b""
        base = head.data
        if n == 1:  # one byte: read in place, no copy of its 32-byte value
            return _ONE_BYTE[_u8_at(base + 8).value]
        if n <= self._CHUNK:
            return _string_at(base, 32 * n)[8::32]
        parts = []
        for start in range(0, n, self._CHUNK):
            count = min(self._CHUNK, n - start)
            parts.append(_string_at(base + 32 * start, 32 * count)[8::32])
        return b"".join(parts)

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        self.lower_at(value, _addressof(val), scope)

    def lower_at(self, value: Any, addr: int, scope: ResourceScope) -> None:
        n = len(value)
        _u8_at(addr).value = c.K_LIST
        if n <= 16 and type(value) is bytes:  # a few bytes: their prebuilt values, joined
            _vallist_new(addr + 8, n, b"".join([_U8_VALS[b] for b in value]) if n else None)
            return
        tmpl = self._template
        if len(tmpl) < 32 * n:
            size = 1 << max(12, math.ceil(math.log2(n)))
            tmpl = bytearray(32 * size)
            tmpl[0::32] = bytes([c.K_U8]) * size
            # The template is never resized (a bigger one replaces it), so
            # its address stays valid while it is exported here.
            self._template_addr = _addressof((ctypes.c_char * len(tmpl)).from_buffer(tmpl))
            self._template = tmpl
        tmpl[8 : 32 * n : 32] = value
        _vallist_new(addr + 8, n, self._template_addr)

    def box(self, value: Any, scope: ResourceScope) -> int:
        # ``lower_at`` writes the whole value (kind, size, data): no zeroing.
        scratch = self._scratch
        if not scratch:
            self._scratch_val = _VAL()
            scratch = self._scratch = _addressof(self._scratch_val)
        self.lower_at(value, scratch, scope)
        return _val_new(scratch)  # type: ignore[no-any-return]


class ListCodec(Codec):
    kind = c.K_LIST

    def __init__(self, elem: Codec) -> None:
        self.elem = elem

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        return self.lift_at(_addressof(val), scope)

    def lift_at(self, addr: int, scope: ResourceScope) -> Any:
        head = _list_at(addr)
        n = head.size
        if n == 0:
            return []
        data = head.data
        elem = self.elem
        if type(elem) is ResourceCodec:  # e.g. poll's list<borrow<pollable>>
            return elem.lift_list(data, n, scope)
        lift = elem.lift_at
        if n == 1:
            return [lift(data, scope)]
        return [lift(data + 32 * i, scope) for i in range(n)]

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        self.lower_at(value, _addressof(val), scope)

    def lower_at(self, value: Any, addr: int, scope: ResourceScope) -> None:
        items = list(value)
        elem = self.elem
        if type(elem) is IntCodec:
            # Integers: the whole list packed here, copied by wasmtime at once.
            if len(items) == 1:
                packed = elem.packed(items[0])
            else:
                packed = b"".join([elem.packed(item) for item in items])
            _u8_at(addr).value = c.K_LIST
            _vallist_new(addr + 8, len(items), packed if items else None)
            return
        _u8_at(addr).value = c.K_LIST
        c.raw_vallist_new_uninit(addr + 8, len(items))
        data = _size_at(addr + 16).value
        _zero(data, len(items), 32)
        lower = self.elem.lower_at
        for i, item in enumerate(items):
            lower(item, data + 32 * i, scope)


class RecordCodec(Codec):
    kind = c.K_RECORD

    def __init__(self, fields: Sequence[tuple[str, Codec]]) -> None:
        self.fields = [(name, name.encode(), codec) for name, codec in fields]

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        data = val.of.record.data
        return {
            name: codec.lift(data[i].val, scope) for i, (name, _, codec) in enumerate(self.fields)
        }

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        val.kind = c.K_RECORD
        c.valrecord_new_uninit(_byref(val.of.record), len(self.fields))
        data = val.of.record.data
        _zero(_size_at(_addressof(val) + 16).value, len(self.fields), 48)
        for i, (name, raw, codec) in enumerate(self.fields):
            entry = data[i]
            _set_name(entry.name, raw)
            codec.lower(value[name], entry.val, scope)


class TupleCodec(Codec):
    kind = c.K_TUPLE

    def __init__(self, elems: Sequence[Codec]) -> None:
        self.elems = list(elems)

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        data = val.of.tuple.data
        return tuple(codec.lift(data[i], scope) for i, codec in enumerate(self.elems))

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        val.kind = c.K_TUPLE
        c.valtuple_new_uninit(_byref(val.of.tuple), len(self.elems))
        data = val.of.tuple.data
        _zero(_size_at(_addressof(val) + 16).value, len(self.elems), 32)
        for i, codec in enumerate(self.elems):
            codec.lower(value[i], data[i], scope)


class VariantCodec(Codec):
    kind = c.K_VARIANT

    def __init__(self, cases: Sequence[tuple[str, Codec | None]]) -> None:
        self.cases = {name: (name.encode(), codec) for name, codec in cases}

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        v = val.of.variant
        name = _get_name(v.discriminant)
        codec = self.cases[name][1]
        if codec is None or not v.val:
            return (name, None)
        return (name, codec.lift(v.val.contents, scope))

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        name, payload = value if isinstance(value, tuple) else (value, None)
        try:
            raw, codec = self.cases[name]
        except KeyError:
            raise ValueError(f"unknown variant case {name!r}") from None
        val.kind = c.K_VARIANT
        addr = _addressof(val)
        _byte_vec_new(addr + 8, len(raw), raw)  # of.variant.discriminant
        _ptr_at(addr + 24).value = codec.box(payload, scope) if codec is not None else None


class EnumCodec(Codec):
    kind = c.K_ENUM

    def __init__(self, names: Sequence[str]) -> None:
        self.names = {name: name.encode() for name in names}

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        return _get_name(val.of.enumeration)

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        name = getattr(value, "value", value)
        try:
            raw = self.names[name]
        except KeyError:
            raise ValueError(f"unknown enum case {name!r}") from None
        val.kind = c.K_ENUM
        _set_name(val.of.enumeration, raw)


class OptionCodec(Codec):
    kind = c.K_OPTION

    def __init__(self, payload: Codec) -> None:
        self.payload = payload

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        p = val.of.option
        return self.payload.lift(p.contents, scope) if p else None

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        val.kind = c.K_OPTION
        boxed = None if value is None else self.payload.box(value, scope)
        _ptr_at(_addressof(val) + 8).value = boxed


class ResultCodec(Codec):
    kind = c.K_RESULT

    def __init__(self, ok: Codec | None, err: Codec | None) -> None:
        self.ok, self.err = ok, err

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        r = val.of.result
        if r.is_ok:
            return Ok(self.ok.lift(r.val.contents, scope) if self.ok and r.val else None)
        return Err(self.err.lift(r.val.contents, scope) if self.err and r.val else None)

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        self.lower_at(value, _addressof(val), scope)

    def lower_at(self, value: Any, addr: int, scope: ResourceScope) -> None:
        # The payload first: if it fails, the value is left as it was.
        if isinstance(value, Err):
            codec = self.err
            boxed = 0 if codec is None else codec.box(value.value, scope)
            head = _result_at(addr)
            head.kind = c.K_RESULT
            head.is_ok = False
            head.val = boxed
            return
        codec = self.ok
        if codec is None:
            boxed = 0
        else:
            boxed = codec.box(value.value if isinstance(value, Ok) else value, scope)
        head = _result_at(addr)
        head.kind = c.K_RESULT
        head.is_ok = True
        head.val = boxed


class FlagsCodec(Codec):
    kind = c.K_FLAGS

    def __init__(self, names: Sequence[str]) -> None:
        self.names = {name: name.encode() for name in names}

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        f = val.of.flags
        return frozenset(_get_name(f.data[i]) for i in range(f.size))

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        names = [n for n in self.names if n in value]
        val.kind = c.K_FLAGS
        c.valflags_new_uninit(_byref(val.of.flags), len(names))
        data = val.of.flags.data
        _zero(_size_at(_addressof(val) + 16).value, len(names), 16)
        for i, name in enumerate(names):
            _set_name(data[i], self.names[name])


class ResourceCodec(Codec):
    """own<T> / borrow<T> of a host-defined resource type."""

    kind = c.K_RESOURCE

    def __init__(self, owned: bool) -> None:
        self.owned = owned
        # The out-parameter of every lift and lower (they never interleave):
        # no pointer object and no byref() per call.
        self._slot: Any = ctypes.c_void_p()
        self._slot_ref = _byref(self._slot)

    def lift(self, val: Any, scope: ResourceScope) -> Any:
        return self.lift_at(ctypes.addressof(val), scope)

    def lift_at(self, addr: int, scope: ResourceScope) -> Any:
        rep = self._rep(addr + 8, scope.cx)
        # An own handle moved to the host: the guest's table no longer holds it.
        return scope.take(rep) if self.owned else scope.lookup(rep)

    def lift_list(self, data: int, n: int, scope: ResourceScope) -> list[Any]:
        """The ``n`` handles of a ``list<own|borrow<T>>`` at ``data``."""
        rep_at, cx = self._rep, scope.cx
        get = scope.take if self.owned else scope.lookup
        return [get(rep_at(field, cx)) for field in range(data + 8, data + 32 * n, 32)]

    def _rep(self, field: int, cx: Any) -> int:
        """The rep of the handle whose pointer is at ``field``; its box is freed."""
        # The pointer field itself as the argument: ctypes passes what it holds.
        err = _any_to_host(cx, _ptr_at(field), self._slot_ref)
        if err:
            _resource_error(err)
        slot = self._slot
        if _IN_PLACE:
            host = slot.value
            view = _BOX_VIEWS.get(host) or _new_box_view(host)
            rep: int = view.rep
        else:
            rep = _host_rep(slot)
        _host_delete(slot)
        return rep

    def lower(self, value: Any, val: Any, scope: ResourceScope) -> None:
        self.lower_at(value, ctypes.addressof(val), scope)

    def lower_at(self, value: Any, addr: int, scope: ResourceScope) -> None:
        if not self.owned:
            raise TypeError("a host cannot return a borrowed handle")
        if not isinstance(value, HostResource):
            raise TypeError(f"expected a host resource, got {type(value).__name__}")
        rep = scope.insert(value)
        box = _OWN_BOX_FIELDS
        if box is not None:
            box.rep = rep
            box.tag = value.resource_tag
            err = _host_to_any(scope.cx, _OWN_BOX_P, self._slot_ref)
        else:
            host = _host_new(True, rep, value.resource_tag)
            try:
                err = _host_to_any(scope.cx, host, self._slot_ref)
            finally:
                _host_delete(host)
        if err:
            msg, _ = c.take_error(ctypes.cast(err, c.ERROR_P))
            raise TypeError(f"cannot hand resource to guest: {msg}")
        head = _pointer_at(addr)
        head.kind = c.K_RESOURCE
        head.ptr = self._slot.value


def _resource_error(err: int) -> NoReturn:
    msg, _ = c.take_error(ctypes.cast(err, c.ERROR_P))
    raise TypeError(f"not a host resource: {msg}")


_INT_FORMAT = {
    "s8": "b",
    "u8": "B",
    "s16": "h",
    "u16": "H",
    "s32": "i",
    "u32": "I",
    "s64": "q",
    "u64": "Q",
}
_INT_TYPES = {
    "s8": ctypes.c_int8,
    "u8": ctypes.c_uint8,
    "s16": ctypes.c_int16,
    "u16": ctypes.c_uint16,
    "s32": ctypes.c_int32,
    "u32": ctypes.c_uint32,
    "s64": ctypes.c_int64,
    "u64": ctypes.c_uint64,
}
#: per integer field: a view of a value's kind and integer (at offset 8)
_INT_HEAD: dict[str, type[ctypes.Structure]] = {
    field: type(
        f"_{field.capitalize()}Head",
        (ctypes.Structure,),
        {"_fields_": (("kind", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 7), ("value", ty))},
    )
    for field, ty in _INT_TYPES.items()
}
_INT_AT = {field: ty.from_address for field, ty in _INT_TYPES.items()}

_INTS = {
    wt.S8: (c.K_S8, "s8", -(2**7), 2**7 - 1),
    wt.U8: (c.K_U8, "u8", 0, 2**8 - 1),
    wt.S16: (c.K_S16, "s16", -(2**15), 2**15 - 1),
    wt.U16: (c.K_U16, "u16", 0, 2**16 - 1),
    wt.S32: (c.K_S32, "s32", -(2**31), 2**31 - 1),
    wt.U32: (c.K_U32, "u32", 0, 2**32 - 1),
    wt.S64: (c.K_S64, "s64", -(2**63), 2**63 - 1),
    wt.U64: (c.K_U64, "u64", 0, 2**64 - 1),
}


def compile_type(ty: Any) -> Codec:
    """Build the codec for a wasmtime-py component ``ValType``."""
    t = type(ty)
    if t is wt.Bool:
        return BoolCodec()
    if t in _INTS:
        return IntCodec(*_INTS[t])
    if t is wt.F32:
        return FloatCodec(c.K_F32, "f32")
    if t is wt.F64:
        return FloatCodec(c.K_F64, "f64")
    if t is wt.Char:
        return CharCodec()
    if t is wt.String:
        return StringCodec()
    if t is wt.ListType:
        elem = ty.element
        return BytesCodec() if type(elem) is wt.U8 else ListCodec(compile_type(elem))
    if t is wt.RecordType:
        return RecordCodec([(name, compile_type(f)) for name, f in ty.fields])
    if t is wt.TupleType:
        return TupleCodec([compile_type(e) for e in ty.elements])
    if t is wt.VariantType:
        return VariantCodec(
            [(name, None if p is None else compile_type(p)) for name, p in ty.cases]
        )
    if t is wt.EnumType:
        return EnumCodec(ty.names)
    if t is wt.OptionType:
        return OptionCodec(compile_type(ty.payload))
    if t is wt.ResultType:
        ok, err = ty.ok, ty.err
        return ResultCodec(
            None if ok is None else compile_type(ok), None if err is None else compile_type(err)
        )
    if t is wt.FlagsType:
        return FlagsCodec(ty.names)
    if t is wt.OwnType:
        return ResourceCodec(owned=True)
    if t is wt.BorrowType:
        return ResourceCodec(owned=False)
    raise TypeError(f"component values of type {t.__name__} are not supported by the C API")


class Signature:
    """The compiled parameter and result codecs of one function type."""

    __slots__ = ("param_names", "params", "result")

    def __init__(self, param_names: list[str], params: list[Codec], result: Codec | None) -> None:
        self.param_names = param_names
        self.params = params
        self.result = result

    @classmethod
    def from_func_type(cls, fty: Any) -> Signature:
        """Compile a borrowed ``wasmtime_component_func_type_t*``."""
        ft = wt.FuncType._from_ptr(fty, owner=True)
        params = ft.params
        result = ft.result
        return cls(
            [name for name, _ in params],
            [compile_type(p) for _, p in params],
            None if result is None else compile_type(result),
        )
