"""Every array arrives with exactly its own dtype through the wire format, alone or inside a
container, whatever was sent before it (the encoder's and decoder's caches), no MPI.

The same properties under MPI, with several hash seeds: tests/jobs/test_dtypes_exact.py.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from dtypes import contained, dtype_facts, facts, messages, renamed
from hypothesis import given, settings
from test_wire import roundtrip

from distrcomp import wire


def send(obj):
    out, _, _ = roundtrip(obj)
    assert facts(out) == facts(obj)
    return out


@settings(max_examples=300, deadline=None)
@given(messages())
def test_every_array_arrives_with_exactly_its_dtype_whatever_came_before(steps):
    for array, container, rename in steps:
        send(contained(array, container))
        if rename and array.dtype.names is not None:
            array.dtype.names = renamed(array.dtype)
            send(contained(array, container))


def test_metadata_and_align_do_not_leak_between_equal_dtypes():
    # numpy's == and hash ignore both: a cache keyed by dtype equality mixed them up.
    plain = np.dtype("f8")
    tagged = np.dtype("f8", metadata={"unit": "m"})
    aligned = np.dtype([("a", "u1"), ("b", "<i4")], align=True)
    packed = np.dtype({"names": ["a", "b"], "formats": ["u1", "<i4"], "offsets": [0, 4],
                       "itemsize": 8})
    assert tagged == plain and packed == aligned
    for dtype in (plain, tagged, plain, aligned, packed, aligned):
        for shape in ((3,), (5000,)):  # inline, and as a payload
            got = send(np.zeros(shape, dtype))
            assert dtype_facts(got.dtype) == dtype_facts(dtype)


def test_renaming_fields_in_place_is_seen_by_the_next_array():
    array = np.zeros(3, [("a", "<i4"), ("b", "<f8")])
    send(array)
    array.dtype.names = ("c", "d")
    assert send(array).dtype.names == ("c", "d")


def test_a_received_structured_dtype_is_the_arrays_own():
    # Renaming the fields of one received array must not rename those of the next.
    array = np.zeros(3, [("a", "<i4"), ("b", "<f8")])
    first = send(array)
    first.dtype.names = ("p", "q")
    assert send(array).dtype.names == ("a", "b")


class _Unloadable:
    """Metadata that pickles but cannot be unpickled (as a class missing on the receiver)."""

    def __reduce__(self):
        return _fail, ()


def _fail():
    raise ImportError("no such class here")


def test_after_an_undecodable_dtype_plain_arrays_still_arrive():
    bad = np.zeros(3, np.dtype("f8", metadata={"obj": _Unloadable()}))
    with pytest.raises(ImportError):
        roundtrip(bad)
    for shape in ((3,), (7,), (2, 2), (5000,)):
        got = send(np.ones(shape))
        assert got.dtype.metadata is None and np.array_equal(got, np.ones(shape))


@pytest.mark.parametrize("container", ["dict", "list", "object array"])
@pytest.mark.parametrize("array", [
    np.arange(10, dtype=">f8")[::2],
    np.arange(12, dtype=">i4").reshape(3, 4)[:, 1:3],
    np.arange(3).astype(">M8[s]"),
    np.arange(3).astype("<M8[s]"),
    np.arange(6).astype(">m8[ms]").reshape(2, 3)[:, ::2],
    np.asfortranarray(np.arange(6, dtype=">f4").reshape(2, 3)),
], ids=["be-strided", "be-2d-slice", "be-datetime", "le-datetime", "be-timedelta-strided", "be-F"])
def test_arrays_inside_containers_keep_byte_order_and_values(array, container):
    # numpy pickles non-contiguous and datetime arrays in-band and rebuilds them native-endian.
    got = send(contained(array, container))
    inner = got["array"] if container == "dict" else got[0]
    assert inner.dtype.str == array.dtype.str and np.array_equal(inner, array)


def test_arrays_inside_containers_go_out_of_band_without_pickling_their_bytes():
    box = {"strided": np.arange(4000, dtype=">f8")[::2], "when": np.arange(2000).astype("M8[s]")}
    frame, payloads, _ = wire.encode(box)
    assert b"_reconstruct" not in frame  # the pickle stream is in the frame, the bytes are not
    assert sorted(memoryview(p).nbytes for p in payloads) == [16000, 16000]


def test_a_string_that_looks_like_numpys_in_band_reconstructor_still_roundtrips():
    obj = {"name": "_reconstruct", "w": np.arange(3)}
    assert send(obj)["name"] == "_reconstruct"
    assert pickle.loads(pickle.dumps(obj))["name"] == "_reconstruct"


@pytest.mark.parametrize("array", [
    np.empty((), "M8"), np.empty(0, "m8"), np.empty((), "M8[s]"), np.empty(0, object),
    np.zeros(4, "?")[::2], np.empty((2, 3), "u1")[:, ::2],
], ids=["M8-0d", "m8-empty", "M8[s]-0d", "object-empty", "bool-strided", "u1-2d-strided"])
def test_every_in_band_array_pickle_is_longer_than_the_streams_that_skip_the_search(array):
    stream = pickle.dumps(array, 5, buffer_callback=lambda buffer: None)
    if wire._IN_BAND_ARRAY in stream:
        assert len(stream) > wire._IN_BAND_MIN
