"""The wire format alone: encode then decode, payloads handed over in order, no MPI."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from distrcomp import wire


def roundtrip(obj):
    frame, payloads, owned = wire.encode(obj)
    assert isinstance(frame, bytes) and len(frame) <= wire.FRAME_MAX
    queue = list(payloads)

    def fill(buffer):
        source = memoryview(queue.pop(0)).cast("B")
        target = memoryview(buffer).cast("B")
        assert target.nbytes == source.nbytes
        target[:] = source

    out = wire.decode(memoryview(bytearray(frame)), fill)
    assert not queue, "decode left payloads unread"
    return out, payloads, owned


def assert_same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert type(b) is np.ndarray
    assert b.dtype == a.dtype and b.shape == a.shape
    assert a.tobytes() == b.tobytes()
    assert b.flags.writeable


DTYPES = [
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float16", "float32", "float64", "longdouble", "complex64", "complex128",
    ">i4", ">f8", "<f8", ">c16", "datetime64[ns]", "datetime64[D]", "timedelta64[s]",
    "U7", "S5", "V12", [("x", "<i4"), ("y", ">f8"), ("tag", "S3")],
    np.dtype([("a", "u1"), ("b", "<i8")], align=True), np.dtype(("f4", (2, 3))),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("count", [5, 100_000])
def test_every_dtype_roundtrips_without_pickle(dtype, count):
    a = np.zeros(count, dtype)
    a.reshape(-1).view(np.uint8)[...] = np.arange(a.nbytes, dtype=np.uint64).astype(np.uint8)
    out, payloads, _ = roundtrip(a)
    assert_same_array(a, out)
    if a.nbytes > wire.FRAME_MAX:
        assert len(payloads) == 1 and memoryview(payloads[0]).nbytes == a.nbytes


@pytest.mark.parametrize(
    "array",
    [
        np.array(3.5),
        np.zeros((0, 3)),
        np.zeros((4, 0, 2), ">i2"),
        np.arange(24.0).reshape(2, 3, 4),
        np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)),
        np.asfortranarray(np.arange(3 * 10**6, dtype=np.int32).reshape(1000, 3000)),
        np.arange(100.0)[::3],
        np.arange(10**6, dtype=np.int64).reshape(1000, 1000)[::2, ::-3],
        np.arange(12).reshape(3, 4).T,
    ],
    ids=["0d", "empty", "empty3d-be", "c3d", "f3d", "f-large", "strided", "strided-large", "transposed"],
)
def test_shapes_orders_and_strides(array):
    out, _, _ = roundtrip(array)
    assert out.shape == array.shape and out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert out.flags.f_contiguous


def test_large_array_payload_is_the_callers_memory_not_a_copy():
    a = np.arange(10**6, dtype=np.float64)
    frame, payloads, owned = wire.encode(a)
    assert not owned
    assert np.shares_memory(np.asarray(payloads[0]), a)
    assert len(frame) < 100


def test_non_contiguous_large_array_is_copied_once_and_owned():
    a = np.arange(4 * 10**6, dtype=np.float64)[::2]
    _, payloads, owned = wire.encode(a)
    assert owned and not np.shares_memory(np.asarray(payloads[0]), a)


def test_object_dtype_falls_back_to_pickle():
    a = np.array([{"k": 1}, None, "x"], dtype=object)
    out, _, _ = roundtrip(a)
    assert out.dtype == object and list(out) == list(a)


def test_container_of_arrays_sends_array_bytes_out_of_band():
    arrays = {f"a{i}": np.full(1 << 20, i, np.float64) for i in range(4)}
    obj = {"arrays": arrays, "meta": [1, "two", 3.0]}
    frame, payloads, owned = wire.encode(obj)
    assert not owned
    array_payloads = [p for p in payloads if memoryview(p).nbytes == 8 << 20]
    assert len(array_payloads) == 4
    assert len(frame) + sum(memoryview(p).nbytes for p in payloads) < 4 * (8 << 20) + 4096
    out, _, _ = roundtrip(obj)
    for key, value in arrays.items():
        np.testing.assert_array_equal(out["arrays"][key], value)
    assert out["meta"] == [1, "two", 3.0]


@pytest.mark.parametrize(
    "obj",
    [None, 0, -(2**100), 3.25, "text", b"bytes", bytearray(b"ba"), bytearray(), [1, [2, (3,)]],
     {"x": {1, 2}}, "y" * 100_000, list(range(50_000)), (np.float32(1.5), np.int64(7)),
     np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])],
    ids=repr,
)
def test_python_objects_roundtrip(obj):
    out, _, _ = roundtrip(obj)
    if isinstance(obj, np.ma.MaskedArray):
        assert type(out) is np.ma.MaskedArray and out.mask.tolist() == obj.mask.tolist()
    else:
        assert out == obj and type(out) is type(obj)


@pytest.mark.parametrize(
    "obj, name",
    [(lambda x: x, "function"), (threading.Lock(), "lock"), ({"ok": 1, "bad": threading.Lock()}, "dict")],
    ids=["lambda", "lock", "dict-with-lock"],
)
def test_unpicklable_raises_type_error_naming_the_type(obj, name):
    with pytest.raises(TypeError, match=f"cannot pickle object of type {name}"):
        wire.encode(obj)


def test_decode_rejects_a_foreign_frame():
    with pytest.raises(ValueError, match="not a distrcomp frame"):
        wire.decode(memoryview(b"\x09" + bytes(20)), lambda buffer: None)


def test_unpickle_failure_propagates_after_reading_every_payload():
    class Bomb:
        def __reduce__(self):
            return (pickle.loads, (b"not a pickle",))

    obj = [np.zeros(1 << 20), Bomb()]
    frame, payloads, _ = wire.encode(obj)
    remaining = list(payloads)

    def fill(buffer):
        memoryview(buffer).cast("B")[:] = memoryview(remaining.pop(0)).cast("B")

    with pytest.raises(pickle.UnpicklingError):
        wire.decode(memoryview(frame), fill)
    assert not remaining


class _Unbuildable:
    def __reduce__(self):
        return (pickle.loads, (b"not a pickle",))


@pytest.mark.parametrize("count", [5000, 3])  # its data a payload; inline
def test_an_array_whose_pickled_dtype_cannot_be_unpickled_still_has_its_payload_read(count):
    dtype = np.dtype([("a", np.dtype("f8", metadata={"k": _Unbuildable()})), ("b", "i4")])
    frame, payloads, _ = wire.encode(np.zeros(count, dtype))
    filled = []
    with pytest.raises(pickle.UnpicklingError):
        wire.decode(memoryview(frame), lambda buffer: filled.append(len(buffer)))
    assert filled == [len(memoryview(p).cast("B")) for p in payloads] == ([count * 12] if count > 100 else [])


@pytest.mark.parametrize("obj", [np.arange(7.0), np.zeros((3, 2), order="F"), {"k": [1, 2]}, "text"])
def test_decode_reads_only_the_frame_from_a_larger_receive_buffer(obj):
    frame, payloads, _ = wire.encode(obj)
    assert not payloads
    padded = bytearray(wire.FRAME_MAX)
    padded[: len(frame)] = frame
    padded[len(frame) :] = b"\xff" * (wire.FRAME_MAX - len(frame))
    got = wire.decode(memoryview(padded), None)
    if isinstance(obj, np.ndarray):
        assert_same_array(got, obj)
    else:
        assert got == obj


SMALL_ARRAYS = [
    np.array(3.5),
    np.arange(6.0),
    np.arange(24.0).reshape(2, 3, 4),
    np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)),
    np.arange(100.0)[::3],
    np.arange(12).reshape(3, 4).T,
    np.arange(7, dtype=">i4"),
    np.arange(5, dtype=np.complex128),
    np.arange(5, dtype=np.longdouble),
    np.zeros(4, [("x", "<i4"), ("y", ">f8"), ("tag", "S3")]),
    np.zeros((0, 3)),
]
SMALL_IDS = ["0d", "1d", "c3d", "f3d", "strided", "transposed", "big-endian", "complex", "longdouble",
             "structured", "empty"]


@pytest.mark.parametrize("array", SMALL_ARRAYS, ids=SMALL_IDS)
def test_small_array_decoded_from_an_owned_frame_is_a_writable_aligned_array_on_it(array):
    frame, payloads, _ = wire.encode(array)
    assert not payloads
    buffer = bytearray(frame)
    out = wire.decode(buffer, None, True)
    assert_same_array(array, out)
    np.testing.assert_array_equal(out, array)
    assert out.flags.aligned
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert out.flags.f_contiguous
    if out.size:
        assert np.shares_memory(out, np.frombuffer(buffer, np.uint8))  # not copied


@pytest.mark.parametrize("array", SMALL_ARRAYS, ids=SMALL_IDS)
def test_small_array_decoded_from_a_reused_buffer_does_not_refer_to_it(array):
    frame, _, _ = wire.encode(array)
    buffer = bytearray(wire.FRAME_MAX)
    buffer[: len(frame)] = frame
    first = wire.decode(memoryview(buffer), None)
    second = wire.decode(memoryview(buffer), None)
    buffer[:] = b"\xff" * len(buffer)
    for out in (first, second):
        assert_same_array(array, out)
    if first.size:
        assert not np.shares_memory(first, second)
        first[...] = first.flat[0] if first.dtype.fields else 1
        assert second.tobytes() == array.tobytes()


def test_inline_array_data_starts_16_byte_aligned_in_the_frame():
    for code_len_dtype in ("<f8", "<M8[ns]", [("x", "<i4"), ("y", ">f8")]):
        for ndim in range(4):
            array = np.zeros((1,) * ndim, code_len_dtype)
            frame, _, _ = wire.encode(array)
            assert (len(frame) - array.nbytes) % 16 == 0, (code_len_dtype, ndim)


def test_head_caches_are_bounded_and_keep_working_when_emptied():
    for n in range(3 * wire._KEPT):
        array = np.full(n % 300 + 1, n, np.int32).reshape(1, -1) if n % 2 else np.full(n + 1, n, np.int16)
        out = wire.decode(bytearray(wire.encode(array)[0]), None, True)
        assert_same_array(array, out)
        assert len(wire._c_heads) <= wire._KEPT and len(wire._described) <= wire._KEPT


def test_same_shape_in_another_order_byte_order_or_dtype_is_not_confused_by_the_head_cache():
    c = np.arange(6.0).reshape(2, 3)
    variants = [c, np.asfortranarray(c), c.astype(">f8"), c.astype(np.float32), c.T.copy(), c.T]
    for _ in range(2):  # the second time every head comes from the caches
        for array in variants:
            out = wire.decode(bytearray(wire.encode(array)[0]), None, True)
            assert_same_array(array, out)
            np.testing.assert_array_equal(out, array)
            if array.flags.f_contiguous and not array.flags.c_contiguous:
                assert out.flags.f_contiguous
            else:
                assert out.flags.c_contiguous


def test_small_plain_object_travels_as_a_bare_pickle_stream():
    obj = {"step": 12, "loss": 0.25, "name": "worker-3", "ok": True}
    frame, payloads, owned = wire.encode(obj)
    assert frame == pickle.dumps(obj, protocol=5) and not payloads and owned
    assert wire.decode(bytearray(frame), None, True) == obj


def test_small_container_of_arrays_still_sends_them_out_of_band():
    obj = {"w": np.arange(4.0), "meta": "x"}
    frame, payloads, _ = wire.encode(obj)
    assert frame[0] != 0x80 and len(payloads) == 1
    out, _, _ = roundtrip(obj)
    np.testing.assert_array_equal(out["w"], obj["w"])
    assert out["w"].flags.writeable


@pytest.mark.parametrize(("obj", "array"), [
    (np.zeros(wire.FRAME_MAX), True),  # the data is a payload: the frame is the head alone
    (np.asfortranarray(np.zeros((300, 300), np.float32)), True),
    (np.zeros((400, 400))[:, ::2], True),  # copied into C order, still one payload
    (np.zeros(8), True),  # inline
    (np.zeros(0), True),
    ({"w": np.zeros(wire.FRAME_MAX)}, False),  # a pickle frame, its array out of band
    ("text", False),  # a bare pickle
    (b"x" * (2 * wire.FRAME_MAX), False),  # a pickle frame whose stream is a payload
])
def test_an_array_frame_is_recognised_and_described_as_it_decodes(obj, array):
    # p2p keeps what the last array frame from each node describes, for the REPEAT messages
    # (the data alone) that may follow.
    frame, payloads, _ = wire.encode(obj)
    assert wire.is_array_frame(frame) is array
    if array:
        dtype, shape, order, nbytes, inline = wire.describe(frame)
        fill = (lambda buffer: buffer.__setitem__(slice(None), payloads[0])) if payloads else None
        got = wire.decode(frame, fill)
        assert (dtype, shape, nbytes) == (got.dtype, got.shape, got.nbytes)
        assert order == ("F" if got.flags.f_contiguous and not got.flags.c_contiguous else "C")
        assert bool(inline) is not bool(payloads)