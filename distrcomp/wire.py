"""How an object becomes one frame plus payload buffers, and back.

This module is the single definition of distrcomp's wire format. It knows nothing of MPI:
``encode`` returns bytes and buffers, ``decode`` is handed a ``fill`` function that writes
the next payload into a buffer it allocated. The point-to-point engine and the collectives
pass their own ``fill`` (an MPI ``Recv`` or ``Ibcast``), so both share one code path.

A message is a *frame* of at most ``FRAME_MAX`` bytes, followed by zero or more *payloads*:

* ``ARRAY`` frame (a plain ``numpy.ndarray`` without Python objects)::

      <BBHHxxq  kind, flags, ndim, len(dtype code), nbytes
      ndim * <q shape
      dtype code  (``dtype.str``, or the pickled dtype for structured dtypes)
      [data]      inline when the whole frame fits in FRAME_MAX, else one payload

  The data travels as raw bytes in the array's own memory order (C or Fortran); a
  non-contiguous array is copied into C order first. Nothing is pickled.

* ``PICKLE`` frame (everything else)::

      <BBxxIq     kind, flags, number of out-of-band buffers, len(body)
      [body]      inline when it fits, else the first payload

  ``body`` is the out-of-band buffer lengths (int64 each) followed by a pickle-5 stream.
  Buffers that pickle hands out of band (numpy arrays inside containers) follow as their own
  payloads, never copied into the stream.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, Callable

import numpy as np

from . import buffers

__all__ = ["FRAME_MAX", "decode", "encode"]

FRAME_MAX = 16384

_ARRAY, _PICKLE = 1, 2
_INLINE, _FORTRAN, _DTYPE_PICKLED = 1, 2, 4

_ARRAY_HEAD = "<BBHHxxq"
_HEADS = [struct.Struct(f"{_ARRAY_HEAD}{ndim}q") for ndim in range(65)]  # head + shape, per ndim
_PICKLE_HEAD = struct.Struct("<BBxxIq")

_dtype_codes: dict = {}  # dtype -> (code bytes, flag), or None when arrays of it are pickled
_code_dtypes: dict = {}  # code bytes -> dtype (a pickled code never looks like a dtype.str)

Fill = Callable[[Any], None]


def _dtype_code(dtype: np.dtype) -> tuple[bytes, int] | None:
    """How a dtype is named in a frame; None if arrays of it hold Python objects (pickled)."""
    if dtype in _dtype_codes:
        return _dtype_codes[dtype]
    if dtype.hasobject or dtype.kind == "T":
        entry = None
    elif dtype.fields is None and dtype.subdtype is None and np.dtype(dtype.str) == dtype:
        entry = (dtype.str.encode(), 0)
    else:
        entry = (pickle.dumps(dtype, protocol=5), _DTYPE_PICKLED)
    _dtype_codes[dtype] = entry
    return entry


def _dtype_of(code: bytes, flag: int) -> np.dtype:
    dtype = _code_dtypes.get(code)
    if dtype is None:
        dtype = pickle.loads(code) if flag else np.dtype(code.decode())
        _code_dtypes[code] = dtype
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
        dtype_code = _dtype_codes.get(obj.dtype) or _dtype_code(obj.dtype)
        if dtype_code is not None:
            return _encode_array(obj, *dtype_code)
    return _encode_pickle(obj)


def _encode_array(array: np.ndarray, code: bytes, dflag: int) -> tuple[bytes, list[Any], bool]:
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
    head = _HEADS[ndim]
    head_len = head.size + len(code)
    if head_len + nbytes <= FRAME_MAX:
        # Small arrays are copied into the frame: one message, and the caller's array is free.
        data = array.tobytes("F" if fortran else "C")
        frame = b"".join((head.pack(_ARRAY, flags | _INLINE, ndim, len(code), nbytes, *array.shape), code, data))
        return frame, [], True
    if head_len > FRAME_MAX:  # a dtype too large to describe in a frame: let pickle carry it
        return _encode_pickle(array)
    frame = head.pack(_ARRAY, flags, ndim, len(code), nbytes, *array.shape) + code
    return frame, [_bytes_of(array, fortran)], owned


def _encode_pickle(obj: Any) -> tuple[bytes, list[Any], bool]:
    out_of_band: list[pickle.PickleBuffer] = []
    try:
        stream = pickle.dumps(obj, protocol=5, buffer_callback=out_of_band.append)
    except Exception as exc:
        raise TypeError(f"cannot pickle object of type {type(obj).__qualname__}: {exc}") from exc
    if not out_of_band and _PICKLE_HEAD.size + len(stream) <= FRAME_MAX:
        # The usual small message: the same layout as below with no lengths, built directly.
        return _PICKLE_HEAD.pack(_PICKLE, _INLINE, 0, len(stream)) + stream, [], True
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


def decode(frame: memoryview, fill: Fill) -> Any:
    """Rebuild the object from its ``frame``, calling ``fill(buffer)`` once per payload, in order.

    ``frame`` may run past the frame's end (the receive buffer as a whole): the frame says where
    it ends. It may be reused by the caller afterwards: nothing returned refers to it. Every payload
    is filled before anything is unpickled, so a failure to unpickle leaves no payload unread;
    that failure propagates as the unpickler raised it.
    """
    kind = frame[0]
    if kind == _ARRAY:
        return _decode_array(frame, fill)
    if kind == _PICKLE:
        return _decode_pickle(frame, fill)
    raise ValueError(f"not a distrcomp frame (kind byte {kind})")


def _decode_array(frame: memoryview, fill: Fill) -> np.ndarray:
    # ndim is a little-endian uint16 at byte 2; it picks the struct of the whole head.
    head = _HEADS[frame[2] | frame[3] << 8]
    _, flags, ndim, code_len, nbytes, *shape = head.unpack_from(frame)
    offset = head.size
    code = frame[offset : offset + code_len].tobytes()
    dtype = _code_dtypes.get(code)
    if dtype is None:  # not `or`: a dtype without fields is falsy (its len() is 0)
        dtype = _dtype_of(code, flags & _DTYPE_PICKLED)
    offset += code_len
    fortran = flags & _FORTRAN
    if not nbytes:
        return np.empty(shape, dtype, order="F" if fortran else "C")
    if flags & _INLINE:
        flat = np.frombuffer(frame, dtype, nbytes // dtype.itemsize, offset)
        if ndim == 1:
            return flat.copy()
        return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")
    # Receive into the raw block, then wrap it: no byte views of the array to build.
    block = buffers.block(nbytes)
    fill(block)
    return np.ndarray(shape, dtype, buffer=block, order="F" if fortran else "C")


def _decode_pickle(frame: memoryview, fill: Fill) -> Any:
    _, flags, n_buffers, body_len = _PICKLE_HEAD.unpack_from(frame)
    if flags & _INLINE:
        body = frame[_PICKLE_HEAD.size : _PICKLE_HEAD.size + body_len]
        if not n_buffers:
            return pickle.loads(body)
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
