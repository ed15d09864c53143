"""How an object becomes one frame plus payload buffers, and back.

This module is the single definition of distrcomp's wire format. It knows nothing of MPI:
``encode`` returns bytes and buffers, ``decode`` is handed a ``fill`` function that writes
the next payload into a buffer it allocated. The point-to-point engine and the collectives
pass their own ``fill`` (an MPI ``Recv`` or ``Ibcast``), so both share one code path.

A message is a *frame* of at most ``FRAME_MAX`` bytes, followed by zero or more *payloads*:

* ``ARRAY`` frame (a plain ``numpy.ndarray`` without Python objects)::

      <BBHHHq     kind, flags, ndim, len(dtype code), len(head), nbytes
      ndim * <q   shape
      dtype code  (``dtype.str``, or the pickled dtype for structured dtypes)
      zeros       up to len(head), the next multiple of 16
      [data]      inline when the whole frame fits in FRAME_MAX, else one payload

  The data travels as raw bytes in the array's own memory order (C or Fortran); a
  non-contiguous array is copied into C order first. Nothing is pickled. Inline data starts
  16-byte aligned, so a receiver that owns the frame's buffer can return an array made on it.

* bare pickle frame (everything else, when pickle hands out no buffer and the stream fits)::

      pickle-5 stream, nothing before it; its first byte, pickle's PROTO opcode 0x80, is the kind

  The usual small message: no head to build or read, and unpickling stops at the stream's end.

* ``PICKLE`` frame (other objects: out-of-band buffers, or a stream too large for a frame)::

      <BBxxIq     kind, flags, number of out-of-band buffers, len(body)
      [body]      inline when it fits, else the first payload

  ``body`` is the out-of-band buffer lengths (int64 each) followed by a pickle-5 stream.
  Buffers that pickle hands out of band follow as their own payloads, never copied into the
  stream: every ``numpy.ndarray`` inside a container whose dtype holds no Python objects (a
  non-contiguous one is first copied into C order), with its exact dtype. Object arrays (and
  ndarray subclasses) are pickled in-band, as numpy pickles them.

A dtype is named by ``dtype.str`` only when that says everything about it (no fields, no
metadata); any other dtype is pickled whole (field names, offsets, metadata, the ``align``
flag, byte order). The caches below hold only dtypes named by ``dtype.str``: those cannot
change (``dtype.names = ...`` renames a structured dtype in place) and no other dtype that
compares equal to one differs from it (``==`` and ``hash`` ignore metadata and ``align``), and
each cache entry is used only for the very dtype object it was made for.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import struct
from collections import ChainMap
from typing import Any, Callable, ClassVar

import numpy as np

from . import buffers

__all__ = ["BARE_PICKLE", "FRAME_MAX", "decode", "describe", "encode", "has_pickled_dtype",
           "is_array_frame", "pickle_frame"]

FRAME_MAX = 16384

_ARRAY, _PICKLE = 1, 2
BARE_PICKLE = 0x80  # pickle's PROTO opcode: the first byte of every protocol-5 stream
_INLINE, _FORTRAN, _DTYPE_PICKLED = 1, 2, 4

_ARRAY_HEAD = "<BBHHHq"
_HEADS = [struct.Struct(f"{_ARRAY_HEAD}{ndim}q") for ndim in range(65)]  # head + shape, per ndim
_PICKLE_HEAD = struct.Struct("<BBxxIq")

_dtype_codes: dict = {}  # dtype -> (dtype, code bytes), for dtypes named by dtype.str
_code_dtypes: dict = {}  # dtype.str code bytes -> dtype

# A program sends the same few shapes again and again, and for a small array building or
# reading a head costs more than the data: heads of C-ordered arrays by (dtype, shape), and what
# each array head received says; only for dtypes named by dtype.str (see the module docstring),
# and a sender's entry only for the dtype object it was made for (the first item of the value).
# Each is emptied when it reaches _KEPT entries.
_c_heads: dict = {}  # (dtype, shape) -> (dtype, head), of arrays sent inline
_payload_heads: dict = {}  # (dtype, shape) -> (dtype, head), of arrays sent as a payload
_described: dict = {}  # head -> (dtype, shape, order, nbytes, inline)
_KEPT = 256

Fill = Callable[[Any], None]


def _dtype_code(dtype: np.dtype) -> tuple[bytes, int] | None:
    """How a dtype is named in a frame: ``(code, flag)``; None if arrays of it hold Python
    objects (they are pickled)."""
    known = _dtype_codes.get(dtype)
    if known is not None and known[0] is dtype:
        return known[1], 0
    if dtype.hasobject or dtype.kind == "T":
        return None
    if (dtype.fields is None and dtype.subdtype is None and dtype.metadata is None
            and np.dtype(dtype.str) == dtype):
        code = dtype.str.encode()
        if len(_dtype_codes) >= _KEPT:
            _dtype_codes.clear()
        _dtype_codes[dtype] = (dtype, code)
        return code, 0
    return pickle.dumps(dtype, protocol=5), _DTYPE_PICKLED  # never kept: see the module docstring


def _dtype_of(code: bytes, flag: int) -> np.dtype:
    """The dtype a frame's code names; a pickled one is unpickled anew (a new object) each time."""
    if flag:
        return pickle.loads(code)
    dtype = _code_dtypes.get(code)
    if dtype is None:
        dtype = _code_dtypes[code] = np.dtype(code.decode())
    return dtype


def _bytes_of(array: np.ndarray, fortran: bool) -> np.ndarray:
    """A 1-d uint8 view of a contiguous array's memory (no copy)."""
    flat = array.T.reshape(-1) if fortran else array.reshape(-1)
    return flat.view(np.uint8)


def encode(obj: Any) -> tuple[bytes, list[Any], bool]:
    """Turn ``obj`` into ``(frame, payloads, owned)``.

    ``frame`` is a new ``bytes`` of at most ``FRAME_MAX`` bytes. ``payloads`` are buffers to send
    after it, in order. ``owned`` is True when no payload shares memory with ``obj``, so the
    caller may return before the payloads are sent; when False, the payloads are views of the
    caller's arrays and must be sent before ``obj`` may change.

    Raises TypeError, naming the type, if ``obj`` cannot be pickled.
    """
    if type(obj) is np.ndarray:
        dtype = obj.dtype
        if obj.flags.c_contiguous:
            key = (dtype, obj.shape)
            kept = _c_heads.get(key)
            if kept is not None and kept[0] is dtype:
                return kept[1] + obj.tobytes(), [], True
            kept = _payload_heads.get(key)
            if kept is not None and kept[0] is dtype:
                return kept[1], [_bytes_of(obj, False)], False
        dtype_code = _dtype_code(dtype)
        if dtype_code is not None:
            encoded = _encode_array(obj, *dtype_code)
            if encoded is not None:
                return encoded
    # Pickled here rather than in a helper: this is every small message's path.
    out_of_band: list[pickle.PickleBuffer] = []
    try:
        stream = pickle.dumps(obj, 5, buffer_callback=out_of_band.append)
    except Exception as exc:
        raise TypeError(f"cannot pickle object of type {type(obj).__qualname__}: {exc}") from exc
    # numpy pickled an array in-band, which may lose its byte order (find: `in` first tries
    # the operand as an int, and a failed try costs more than the search)
    if len(stream) > _IN_BAND_MIN and stream.find(_IN_BAND_ARRAY) >= 0:
        stream, out_of_band = _pickle_arrays_out_of_band(obj)
    if not out_of_band and len(stream) <= FRAME_MAX:
        return stream, [], True
    return pickle_frame(stream, out_of_band)


# numpy pickles an ndarray in-band (its bytes in the stream, rebuilt by this function) when it
# is not contiguous or its dtype is datetime64/timedelta64, and then rebuilds it native-endian.
# When the function's name is in a stream, the object is pickled again with every plain
# ndarray out of band (a false match, a string holding the name, only costs that second pass).
_IN_BAND_ARRAY = b"_reconstruct"
# Shorter streams hold no in-band array, and skip the search (the usual small dict): one names
# the function, its module, ndarray, and the dtype with its state (at least 140 bytes with
# numpy 1.25-2.x; tests/unit/test_wire_dtypes.py checks this bound).
_IN_BAND_MIN = 100


def _reduce_array(array: np.ndarray) -> Any:
    """How :class:`_ArraysOutOfBand` pickles an ndarray: its bytes out of band, its dtype exact."""
    if array.dtype.hasobject:
        return array.__reduce_ex__(5)
    fortran = not array.flags.c_contiguous and array.flags.f_contiguous
    if not (fortran or array.flags.c_contiguous):
        array = np.ascontiguousarray(array)
    data = pickle.PickleBuffer(_bytes_of(array, fortran))
    return _array_from_buffer, (data, array.dtype, array.shape, "F" if fortran else "C")


class _ArraysOutOfBand(pickle.Pickler):
    """A pickler that sends every ``numpy.ndarray`` without Python objects out of band, with
    its exact dtype (numpy's own pickling keeps out of band only contiguous arrays of some
    dtypes); every other type as ``pickle.dumps`` would (copyreg's table included)."""

    dispatch_table: ClassVar[ChainMap] = ChainMap({np.ndarray: _reduce_array}, copyreg.dispatch_table)


def _array_from_buffer(data: Any, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    """The array :class:`_ArraysOutOfBand` pickled: ``data`` (its bytes) viewed as ``dtype``."""
    return np.frombuffer(data, np.uint8).view(dtype).reshape(shape, order=order)


def _pickle_arrays_out_of_band(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """``obj``'s pickle-5 stream and out-of-band buffers, every plain ndarray out of band."""
    out_of_band: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _ArraysOutOfBand(stream, 5, buffer_callback=out_of_band.append).dump(obj)
    return stream.getvalue(), out_of_band


def is_array_frame(frame: Any) -> bool:
    """True when ``frame`` is an ``ARRAY`` frame (its head, with or without inline data)."""
    return frame[0] == _ARRAY


def has_pickled_dtype(frame: Any) -> bool:
    """True when the ``ARRAY`` frame ``frame`` names its dtype by a pickle, not ``dtype.str``
    (see the module docstring): then no other array shares its dtype object."""
    return bool(frame[1] & _DTYPE_PICKLED)


def describe(frame: Any) -> tuple[np.dtype, tuple[int, ...], str, int, int]:
    """What the head of the ``ARRAY`` frame ``frame`` says: ``(dtype, shape, order, nbytes,
    inline)``; order is "C" or "F". Raises what unpickling a pickled dtype raises."""
    head = bytes(frame[: frame[6] | frame[7] << 8])  # len(head): a little-endian uint16 at byte 6
    return _described.get(head) or _describe(head)


def _head_len(ndim: int, code_len: int) -> int:
    """Bytes before an array frame's inline data: the head padded to a multiple of 16."""
    return (_HEADS[ndim].size + code_len + 15) & ~15


def _encode_array(array: np.ndarray, code: bytes, dflag: int) -> tuple[bytes, list[Any], bool] | None:
    """The frame and payloads of an array; None if its dtype is too large to describe in a frame."""
    owned = False
    fortran = False
    layout = array.flags
    if not layout.c_contiguous:
        if layout.f_contiguous:
            fortran = True
        else:
            array = np.ascontiguousarray(array)
            owned = True
    flags = dflag | (_FORTRAN if fortran else 0)
    nbytes = array.nbytes
    ndim = array.ndim
    head_len = _head_len(ndim, len(code))
    inline = head_len + nbytes <= FRAME_MAX
    if inline:
        flags |= _INLINE
    elif head_len > FRAME_MAX:
        return None
    head = _HEADS[ndim].pack(_ARRAY, flags, ndim, len(code), head_len, nbytes, *array.shape) + code
    head = head.ljust(head_len, b"\0")
    if not fortran and not dflag:
        kept = _c_heads if inline else _payload_heads
        if len(kept) >= _KEPT:
            kept.clear()
        kept[array.dtype, array.shape] = (array.dtype, head)
    if not inline:
        return head, [_bytes_of(array, fortran)], owned
    # Small arrays are copied into the frame: one message, and the caller's array is free.
    return head + array.tobytes("F" if fortran else "C"), [], True


def pickle_frame(stream: bytes, out_of_band: list[pickle.PickleBuffer]) -> tuple[bytes, list[Any], bool]:
    """``(frame, payloads, owned)`` of a pickle-5 ``stream`` that cannot travel as a bare pickle
    frame: it has ``out_of_band`` buffers, or is longer than ``FRAME_MAX``. A ``PICKLE`` frame
    (see the module docstring); ``owned`` as for :func:`encode`. Nothing is copied but a
    stream short enough to go inline."""
    # Empty buffers travel as a zero length only: a zero-byte payload would be a message of its own.
    raws = [buffer.raw() for buffer in out_of_band]
    lengths = struct.pack(f"<{len(raws)}q", *(raw.nbytes for raw in raws))
    payloads = [raw for raw in raws if raw.nbytes]
    body_len = len(lengths) + len(stream)
    if _PICKLE_HEAD.size + body_len <= FRAME_MAX:
        head = _PICKLE_HEAD.pack(_PICKLE, _INLINE, len(raws), body_len)
        return b"".join((head, lengths, stream)), payloads, not payloads
    head = _PICKLE_HEAD.pack(_PICKLE, 0, len(raws), body_len)
    return head, [lengths + stream, *payloads], not payloads


def decode(frame: Any, fill: Fill, own: bool = False) -> Any:
    """Rebuild the object from its ``frame``, calling ``fill(buffer)`` once per payload, in order.

    ``frame`` (a buffer: ``bytearray`` or ``memoryview``) may run past the frame's end (the
    receive buffer as a whole): the frame says where it ends. It may be reused by the caller
    afterwards: nothing returned refers to it. Unless ``own`` is true: then the caller gives
    ``frame``, a writable buffer nothing else refers to, away, and a small array is returned
    as an array on its memory instead of a copy. A failure to unpickle leaves no payload
    unread: a pickle's payloads are all filled before it is unpickled, and an array's payload
    is filled (and dropped) when its pickled dtype cannot be unpickled. The failure propagates
    as the unpickler raised it.
    """
    kind = frame[0]
    if kind == BARE_PICKLE:
        return pickle.loads(frame)
    if kind == _ARRAY:
        return _decode_array(frame, fill, own)
    if kind == _PICKLE:
        return _decode_pickle(frame, fill)
    raise ValueError(f"not a distrcomp frame (kind byte {kind})")


def _decode_array(frame: Any, fill: Fill, own: bool) -> np.ndarray:
    # len(head) is a little-endian uint16 at byte 6.
    head = bytes(frame[: frame[6] | frame[7] << 8])
    described = _described.get(head)
    if described is None:
        try:
            described = _describe(head)
        except Exception:
            _skip_payload(head, fill)  # a dtype that cannot be rebuilt here: its data is still read
            raise
    dtype, shape, order, nbytes, inline = described
    if not nbytes:
        return np.empty(shape, dtype, order=order)
    if inline:
        array = np.ndarray(shape, dtype, frame, len(head), None, order)
        if own and array.flags.aligned:  # the buffer's alignment is its allocator's choice
            return array
        return array.copy(order="K")
    # Receive into the raw block, then wrap it: no byte views of the array to build.
    block = buffers.block(nbytes)
    fill(block)
    return np.ndarray(shape, dtype, block, 0, None, order)


def _skip_payload(head: bytes, fill: Fill) -> None:
    """Read and drop the payload of the array head ``head``, if its data is one."""
    _, flags, _, _, _, nbytes = struct.unpack_from(_ARRAY_HEAD, head)
    if nbytes and not flags & _INLINE:
        fill(bytearray(nbytes))


def _describe(head: bytes) -> tuple[np.dtype, tuple[int, ...], str, int, int]:
    """What an array frame's head says: ``(dtype, shape, order, nbytes, inline)``, remembered."""
    layout = _HEADS[head[2] | head[3] << 8]
    _, flags, _, code_len, _, nbytes, *shape = layout.unpack_from(head)
    code = head[layout.size : layout.size + code_len]
    dtype = _dtype_of(code, flags & _DTYPE_PICKLED)
    described = (dtype, tuple(shape), "F" if flags & _FORTRAN else "C", nbytes, flags & _INLINE)
    if not flags & _DTYPE_PICKLED:  # a pickled dtype is unpickled anew for each array
        if len(_described) >= _KEPT:
            _described.clear()
        _described[head] = described
    return described


def _decode_pickle(frame: memoryview, fill: Fill) -> Any:
    _, flags, n_buffers, body_len = _PICKLE_HEAD.unpack_from(frame)
    if flags & _INLINE:
        body = frame[_PICKLE_HEAD.size : _PICKLE_HEAD.size + body_len]
    else:
        body = memoryview(bytearray(body_len))
        fill(body)
    lengths = struct.unpack_from(f"<{n_buffers}q", body)
    out_of_band = []
    for length in lengths:
        buffer = bytearray(length) if length < buffers.MIN_BYTES else buffers.block(length)
        if length:
            fill(buffer)
        out_of_band.append(buffer)
    return pickle.loads(body[8 * n_buffers :], buffers=out_of_band)
