"""Hypothesis strategies for numpy dtypes and arrays, and what "the same dtype" means in tests.

A plain module beside tests/conftest.py, so that tests/unit (the wire format alone) and the
job program tests/jobs/programs/dtype_roundtrip.py (under mpiexec) share one definition.

``dtype_facts`` is everything a receiver must get back: ``==`` and ``hash`` of numpy dtypes
ignore metadata and the ``align`` flag, so comparing dtypes with ``==`` would miss exactly the
defects these tests are for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

SCALARS = ["?", "i1", "u2", "<i4", ">i4", "<f8", ">f8", "f4", ">c16", "S3", "U2", ">U2",
           "M8[s]", ">M8[ns]", "<m8[D]", ">m8[us]", "V4"]
NAMES = ["a", "b", "x", "y", "tag", "w"]
SHAPES = [(3,), (2, 3), (4,), (2, 2, 2)]  # few, so that one shape is sent again and again


def dtype_facts(dtype: np.dtype) -> tuple:
    """Every fact about ``dtype`` a receiver must get back: byte order, kind, size, field names,
    offsets and types (recursively), the align flag, subarray shape, metadata."""
    fields = None
    if dtype.names is not None:
        fields = tuple((name, dtype_facts(dtype.fields[name][0]), dtype.fields[name][1])
                       for name in dtype.names)
    sub = None
    if dtype.subdtype is not None:
        sub = (dtype_facts(dtype.subdtype[0]), dtype.subdtype[1])
    metadata = None if dtype.metadata is None else sorted(dtype.metadata.items(), key=repr)
    return (dtype.str, dtype.byteorder, dtype.itemsize, dtype.alignment, dtype.isalignedstruct,
            fields, sub, repr(metadata))


def facts(obj: Any) -> Any:
    """``dtype_facts`` of every array in ``obj`` (an array, or a dict / list / object array of
    them), in the shape of ``obj``; anything else as itself."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return ["object array", [facts(item) for item in obj.reshape(-1)]]
        return ["array", dtype_facts(obj.dtype), obj.shape]
    if isinstance(obj, dict):
        return {key: facts(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [facts(item) for item in obj]
    return obj


def metadata(extra: st.SearchStrategy | None = None) -> st.SearchStrategy:
    values = st.integers(-3, 3) | st.text("abc", max_size=3)
    if extra is not None:
        values = values | extra
    return st.none() | st.dictionaries(st.sampled_from(["unit", "note"]), values, min_size=1,
                                       max_size=2)


def with_metadata(dtype: np.dtype, meta: dict | None) -> np.dtype:
    return dtype if meta is None else np.dtype(dtype, metadata=meta)


def dtypes(extra_metadata: st.SearchStrategy | None = None) -> st.SearchStrategy:
    """Scalar dtypes of either byte order (datetimes too), structured dtypes (aligned or not,
    nested, with subarray fields, with explicit offsets and padding), any of them with
    metadata (values from ``extra_metadata`` too, when given)."""
    scalar = st.builds(lambda code, meta: with_metadata(np.dtype(code), meta),
                       st.sampled_from(SCALARS), metadata(extra_metadata))

    def struct(children: st.SearchStrategy) -> st.SearchStrategy:
        field = st.tuples(children, st.sampled_from([(), (2,)]))
        return st.builds(_struct, st.lists(st.sampled_from(NAMES), min_size=1, max_size=3,
                                           unique=True).flatmap(
            lambda names: st.tuples(st.just(names), st.lists(field, min_size=len(names),
                                                             max_size=len(names)))),
            st.booleans(), st.integers(0, 4), metadata(extra_metadata))

    return st.recursive(scalar, struct, max_leaves=4)


def _struct(names_fields: tuple, align: bool, padding: int, meta: dict | None) -> np.dtype:
    names, fields = names_fields
    formats = [np.dtype((dtype, shape)) if shape else dtype for dtype, shape in fields]
    dtype = np.dtype({"names": names, "formats": formats}, align=align)
    if padding and not align:  # explicit itemsize: trailing padding, offsets as numpy chose
        dtype = np.dtype({"names": names, "formats": formats,
                          "offsets": [dtype.fields[n][1] for n in names],
                          "itemsize": dtype.itemsize + padding})
    return with_metadata(dtype, meta)


def array_of(dtype: np.dtype, shape: tuple, layout: str) -> np.ndarray:
    """An array of ``dtype`` and ``shape`` whose bytes are not all alike: C-ordered, Fortran-
    ordered, or a strided view (every other item of a larger array)."""
    count = int(np.prod(shape))
    base = np.zeros(2 * count if layout == "strided" else count, dtype)
    raw = base.view(np.uint8).reshape(-1)
    raw[:] = np.arange(raw.size) % 251
    if layout == "strided":
        return base[::2].reshape(shape)  # a view: not contiguous
    flat = base.reshape(shape)
    return np.asfortranarray(flat) if layout == "F" else flat


def messages(extra_metadata: st.SearchStrategy | None = None) -> st.SearchStrategy:
    """Lists of ``(array, container, rename)``: an array (of any layout), sent as it is or inside
    a dict, a list or an object array, and then, if ``rename`` and its dtype has fields, sent
    again after renaming its dtype's fields in place (``dtype.names = ...``)."""
    array = st.builds(array_of, dtypes(extra_metadata), st.sampled_from(SHAPES),
                      st.sampled_from(["C", "F", "strided"]))
    step = st.tuples(array, st.sampled_from([None, "dict", "list", "object array"]), st.booleans())
    return st.lists(step, min_size=1, max_size=6)


def contained(array: np.ndarray, container: str | None) -> Any:
    """``array`` as it is, or inside the named container."""
    if container == "dict":
        return {"array": array, "n": 1}
    if container == "list":
        return [array, "x"]
    if container == "object array":
        box = np.empty(2, object)
        box[0], box[1] = array, "x"
        return box
    return array


def renamed(dtype: np.dtype) -> tuple[str, ...]:
    """New names for ``dtype``'s fields, each different from the old."""
    return tuple(f"{name}_{i}" for i, name in enumerate(dtype.names))
