"""Raw handles on the wasmtime C API that wasmtime-py ships.

This module (and the rest of ``fabric.engine``) is the only place in fabric
that touches ctypes.  It re-exports the raw ctypes function objects of
``wasmtime._bindings`` (skipping wasmtime-py's Python-level wrappers, which
cost a frame per call on the hot path) and declares the few prototypes that
need a different restype, such as functions whose error result must be handed
back to wasmtime as a plain address.
"""

from __future__ import annotations

import ctypes
from typing import Any

from wasmtime import _bindings as _b
from wasmtime import _ffi

lib = _ffi.dll

VAL = _b.wasmtime_component_val_t
VAL_P = ctypes.POINTER(VAL)
VAL_SIZE = ctypes.sizeof(VAL)
NAME = _b.wasm_name_t
ERROR_P = ctypes.POINTER(_b.wasmtime_error_t)
CONTEXT_P = ctypes.POINTER(_b.wasmtime_context_t)
FUNC_TYPE_P = ctypes.POINTER(_b.wasmtime_component_func_type_t)
CONTINUATION = _b.wasmtime_async_continuation_t
COMPONENT_FUNC = _b.wasmtime_component_func_t
COMPONENT_INSTANCE = _b.wasmtime_component_instance_t
RESOURCE_ANY_P = ctypes.POINTER(_b.wasmtime_component_resource_any_t)
RESOURCE_HOST_P = ctypes.POINTER(_b.wasmtime_component_resource_host_t)

# Value kinds (the ``kind`` byte of wasmtime_component_val_t).  Not the same
# numbering as the WASMTIME_COMPONENT_VALTYPE_* type kinds.
K_BOOL, K_S8, K_U8, K_S16, K_U16, K_S32, K_U32, K_S64, K_U64 = range(9)
K_F32, K_F64, K_CHAR, K_STRING, K_LIST, K_RECORD, K_TUPLE = range(9, 16)
K_VARIANT, K_ENUM, K_OPTION, K_RESULT, K_FLAGS, K_RESOURCE = range(16, 22)

# Callback prototypes.
FuncCallback = _b.wasmtime_component_func_callback_t
AsyncFuncCallback = _b.wasmtime_component_func_async_callback_t
ContinuationCallback = _b.wasmtime_func_async_continuation_callback_t
Finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
ResourceDestructor = _b.wasmtime_component_resource_destructor_t
# The same callbacks with every pointer as a plain address (``c_void_p``):
# ctypes then hands the host-call trampolines ints instead of building a
# pointer object per argument, and the codecs read and write the values at
# those addresses (``lift_at`` / ``lower_at``).
_P = ctypes.c_void_p
RawFuncCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t, _P, _P, _P, _P, ctypes.c_size_t, _P, ctypes.c_size_t
)
RawAsyncFuncCallback = ctypes.CFUNCTYPE(
    None, _P, _P, _P, _P, ctypes.c_size_t, _P, ctypes.c_size_t, _P, _P
)
RawResourceDestructor = ctypes.CFUNCTYPE(ctypes.c_size_t, _P, _P, ctypes.c_uint32)
EpochCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    CONTEXT_P,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint8),
)

# --- errors -----------------------------------------------------------------
error_new_addr = lib.wasmtime_error_new
error_new_addr.restype = ctypes.c_void_p
error_new_addr.argtypes = [ctypes.c_char_p]
error_new = _b._wasmtime_error_new
error_message = _b._wasmtime_error_message
error_delete = _b._wasmtime_error_delete
error_wasm_trace = _b._wasmtime_error_wasm_trace
frame_vec_delete = _b._wasm_frame_vec_delete
frame_func_index = _b._wasm_frame_func_index
frame_module_offset = _b._wasm_frame_module_offset
frame_func_name = _b._wasmtime_frame_func_name
frame_module_name = _b._wasmtime_frame_module_name
FRAME_VEC = _b.wasm_frame_vec_t

# --- values -----------------------------------------------------------------
byte_vec_new = lib.wasm_byte_vec_new
byte_vec_new.restype = None
byte_vec_new.argtypes = [ctypes.POINTER(NAME), ctypes.c_size_t, ctypes.c_char_p]
byte_vec_delete = _b._wasm_byte_vec_delete
val_new = _b._wasmtime_component_val_new
val_delete = _b._wasmtime_component_val_delete
vallist_new = _b._wasmtime_component_vallist_new
vallist_new_uninit = _b._wasmtime_component_vallist_new_uninit
valrecord_new_uninit = _b._wasmtime_component_valrecord_new_uninit
valtuple_new_uninit = _b._wasmtime_component_valtuple_new_uninit
valflags_new_uninit = _b._wasmtime_component_valflags_new_uninit

# --- resources --------------------------------------------------------------
resource_type_new_host = _b._wasmtime_component_resource_type_new_host
resource_type_delete = _b._wasmtime_component_resource_type_delete
resource_host_new = _b._wasmtime_component_resource_host_new
resource_host_rep = _b._wasmtime_component_resource_host_rep
resource_host_type = _b._wasmtime_component_resource_host_type
resource_host_owned = _b._wasmtime_component_resource_host_owned
resource_host_delete = _b._wasmtime_component_resource_host_delete
resource_host_to_any = _b._wasmtime_component_resource_host_to_any
resource_any_to_host = _b._wasmtime_component_resource_any_to_host
resource_any_owned = _b._wasmtime_component_resource_any_owned
resource_any_delete = _b._wasmtime_component_resource_any_delete


# The same library loaded as a ``PyDLL``: its functions keep the GIL. Only
# for short calls that never run wasm or wait (value and resource plumbing
# on the host-call path): releasing and taking the GIL again costs more than
# they do. ``call_future_poll`` runs guests and must release it (the epoch
# ticker thread needs it).
_pylib = ctypes.PyDLL(lib._name, handle=lib._handle)


def _raw(name: str, restype: Any, argtypes: list[Any], *, keep_gil: bool = False) -> Any:
    """A fresh function object for ``name`` (not wasmtime-py's shared one)
    with the given prototype (pointers usually taken and returned as addresses)."""
    fn = _pylib[name] if keep_gil else lib[name]
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


# Addresses in, addresses out: no pointer objects on the host-call path.
raw_any_to_host = _raw("wasmtime_component_resource_any_to_host", _P, [_P, _P, _P], keep_gil=True)
raw_host_to_any = _raw("wasmtime_component_resource_host_to_any", _P, [_P, _P, _P], keep_gil=True)
raw_host_new = _raw(
    "wasmtime_component_resource_host_new",
    _P,
    [ctypes.c_bool, ctypes.c_uint32, ctypes.c_uint32],
    keep_gil=True,
)
raw_host_rep = _raw("wasmtime_component_resource_host_rep", ctypes.c_uint32, [_P], keep_gil=True)
raw_host_delete = _raw("wasmtime_component_resource_host_delete", None, [_P], keep_gil=True)
raw_val_new = _raw("wasmtime_component_val_new", _P, [_P], keep_gil=True)
raw_context_get_data = _raw("wasmtime_context_get_data", _P, [_P], keep_gil=True)
raw_vallist_new = _raw(
    "wasmtime_component_vallist_new", None, [_P, ctypes.c_size_t, _P], keep_gil=True
)
raw_vallist_new_uninit = _raw(
    "wasmtime_component_vallist_new_uninit", None, [_P, ctypes.c_size_t], keep_gil=True
)
raw_byte_vec_new = _raw(
    "wasm_byte_vec_new", None, [_P, ctypes.c_size_t, ctypes.c_char_p], keep_gil=True
)
raw_host_type = _raw("wasmtime_component_resource_host_type", ctypes.c_uint32, [_P], keep_gil=True)
raw_host_owned = _raw("wasmtime_component_resource_host_owned", ctypes.c_bool, [_P], keep_gil=True)
#: ``memmove`` / ``memset`` keeping the GIL (ctypes' own release it)
memmove = ctypes.PYFUNCTYPE(_P, _P, _P, ctypes.c_size_t)(ctypes._memmove_addr)  # type: ignore[attr-defined]
memset = ctypes.PYFUNCTYPE(_P, _P, ctypes.c_int, ctypes.c_size_t)(ctypes._memset_addr)  # type: ignore[attr-defined]


class HostBoxFields(ctypes.Structure):
    """The rep and type of a ``wasmtime_component_resource_host_t`` (a
    16-byte box: the own/borrow state, then ``rep`` and ``type``), in place."""

    _fields_ = (
        ("state", ctypes.c_uint64),
        ("rep", ctypes.c_uint32),
        ("tag", ctypes.c_uint32),
    )


def _host_box_in_place() -> bool:
    """May the host-call path read a host resource's rep from its box, and
    reuse one owned box by rewriting its rep and type, instead of a C call
    per read and a new box per handle?

    Checked against this library at import: the accessors must agree with
    the fields the boxes are read through, for own and borrow boxes, and a
    box rewritten in place must read back, through the accessors, as the
    handle written.  Where anything differs the codecs use the C calls.
    """
    made: list[int] = []
    try:
        for owned in (True, False):
            for rep, tag in ((0x1234_5678, 0x0BAD_CAFE), (0x0F0E_0D0C, 7)):
                box = raw_host_new(owned, rep, tag)
                if not box:
                    return False
                made.append(box)
                fields = HostBoxFields.from_address(box)
                if (fields.rep, fields.tag) != (rep, tag) or raw_host_rep(box) != rep:
                    return False
        own_a, own_b, borrow_a, borrow_b = (HostBoxFields.from_address(b) for b in made)
        if own_a.state != own_b.state or borrow_a.state != borrow_b.state:
            return False
        if own_a.state == borrow_a.state:
            return False
        own_a.rep, own_a.tag = 42, 9
        return (
            raw_host_rep(made[0]) == 42
            and raw_host_type(made[0]) == 9
            and raw_host_owned(made[0])
            and not raw_host_owned(made[2])
        )
    finally:
        for box in made:
            raw_host_delete(box)


#: ``True`` when host resource boxes may be read and rewritten in place
HOST_BOX_IN_PLACE = _host_box_in_place()


# --- linker -----------------------------------------------------------------
linker_new = _b._wasmtime_component_linker_new
linker_delete = _b._wasmtime_component_linker_delete
linker_root = _b._wasmtime_component_linker_root
linker_instance_add_instance = _b._wasmtime_component_linker_instance_add_instance
linker_instance_add_func = _b._wasmtime_component_linker_instance_add_func
linker_instance_add_func_async = _b._wasmtime_component_linker_instance_add_func_async
linker_instance_add_resource = _b._wasmtime_component_linker_instance_add_resource
linker_instance_delete = _b._wasmtime_component_linker_instance_delete
linker_instantiate_async = _b._wasmtime_component_linker_instantiate_async
LINKER_INSTANCE_P = ctypes.POINTER(_b.wasmtime_component_linker_instance_t)
raw_linker_instance_add_func = _raw(
    "wasmtime_component_linker_instance_add_func",
    ERROR_P,
    [LINKER_INSTANCE_P, ctypes.c_char_p, ctypes.c_size_t, RawFuncCallback, _P, Finalizer],
)
raw_linker_instance_add_func_async = _raw(
    "wasmtime_component_linker_instance_add_func_async",
    ERROR_P,
    [LINKER_INSTANCE_P, ctypes.c_char_p, ctypes.c_size_t, RawAsyncFuncCallback, _P, Finalizer],
)
raw_linker_instance_add_resource = _raw(
    "wasmtime_component_linker_instance_add_resource",
    ERROR_P,
    [
        LINKER_INSTANCE_P,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(_b.wasmtime_component_resource_type_t),
        RawResourceDestructor,
        _P,
        Finalizer,
    ],
)

# --- store, calls -----------------------------------------------------------
store_new = _b._wasmtime_store_new
store_delete = _b._wasmtime_store_delete
store_context = _b._wasmtime_store_context
store_limiter = _b._wasmtime_store_limiter
store_epoch_deadline_callback = _b._wasmtime_store_epoch_deadline_callback
context_set_epoch_deadline = _b._wasmtime_context_set_epoch_deadline
engine_increment_epoch = _b._wasmtime_engine_increment_epoch
context_get_data = lib.wasmtime_context_get_data
context_get_data.restype = ctypes.c_void_p
context_get_data.argtypes = [CONTEXT_P]

get_export_index = _b._wasmtime_component_get_export_index
instance_get_func = _b._wasmtime_component_instance_get_func
export_index_delete = _b._wasmtime_component_export_index_delete
func_call_async = _b._wasmtime_component_func_call_async
func_type = _b._wasmtime_component_func_type
call_future_poll = _b._wasmtime_call_future_poll
call_future_delete = _b._wasmtime_call_future_delete


def error_text(err: Any) -> str:
    """Take the message out of a ``wasmtime_error_t*`` (does not free it)."""
    msg = NAME()
    error_message(err, ctypes.byref(msg))
    try:
        return ctypes.string_at(msg.data, msg.size).decode("utf-8", "replace")
    finally:
        byte_vec_delete(ctypes.byref(msg))


def error_trace(err: Any) -> list[str]:
    """The wasm backtrace of an error, innermost frame first."""
    frames = FRAME_VEC()
    error_wasm_trace(err, ctypes.byref(frames))
    out: list[str] = []
    try:
        for i in range(frames.size):
            frame = frames.data[i]
            name_p = frame_func_name(frame)
            name = (
                ctypes.string_at(name_p.contents.data, name_p.contents.size).decode(
                    "utf-8", "replace"
                )
                if name_p
                else f"<func {frame_func_index(frame)}>"
            )
            out.append(f"{name} @ 0x{frame_module_offset(frame):x}")
    finally:
        frame_vec_delete(ctypes.byref(frames))
    return out


def take_error(err: Any) -> tuple[str, list[str]]:
    """Message and backtrace of an error, then free it."""
    try:
        return error_text(err), error_trace(err)
    finally:
        error_delete(err)


def addr(ptr: Any) -> int:
    """The address of a ctypes pointer (0 for NULL)."""
    value = ctypes.cast(ptr, ctypes.c_void_p).value
    return int(value or 0)
