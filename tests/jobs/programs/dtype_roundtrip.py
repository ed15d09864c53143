"""Node 0 sends node 1 arrays of every kind of dtype that hypothesis makes up (alone and inside
containers, their structured dtypes renamed in place between sends); node 1 sends each back
together with the facts of the dtypes it received; node 0 checks both against what it sent.
Some metadata can be unpickled only on node 0: node 1 then reports the decode error, and the
arrays after it must still arrive whole. Run by tests/jobs/test_dtypes_exact.py under mpiexec
with 2 nodes, with several PYTHONHASHSEED values (dict order and hash collisions of dtypes
depend on it). Prints "checked N messages" on node 0.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # tests/dtypes.py

from dtypes import contained, facts, messages, renamed
from hypothesis import given, settings
from hypothesis import strategies as st

import distrcomp as dc


def _only_on_node_0():
    if dc.node_id != 0:
        raise ImportError("this metadata cannot be unpickled here")
    return "on node 0"


class OnlyOnNode0:
    def __reduce__(self):
        return _only_on_node_0, ()

    def __repr__(self):
        return "OnlyOnNode0()"


def unloadable(obj) -> bool:
    return "OnlyOnNode0()" in repr(facts(obj))


sent = 0


def exchange(obj) -> None:
    global sent
    dc.send(1, obj)
    sent += 1
    reply = dc.recv(1)
    if unloadable(obj):
        assert reply[0] == "undecodable", reply
        return
    assert reply[0] == "ok", reply
    _, remote_facts, echoed = reply
    assert remote_facts == facts(obj), (remote_facts, facts(obj))
    assert facts(echoed) == facts(obj), (facts(echoed), facts(obj))


@settings(max_examples=int(os.environ.get("EXAMPLES", "150")), deadline=None, database=None)
@given(messages(st.just(OnlyOnNode0())))
def test_exact_dtypes(steps) -> None:
    for array, container, rename in steps:
        exchange(contained(array, container))
        if rename and array.dtype.names is not None:
            array.dtype.names = renamed(array.dtype)
            exchange(contained(array, container))


if dc.node_id == 0:
    try:
        test_exact_dtypes()
    finally:
        dc.send(1, "stop")
    print(f"checked {sent} messages")
elif dc.node_id == 1:
    while True:
        try:
            got = dc.recv(0)
        except dc.MessageDecodeError as exc:
            dc.send(0, ("undecodable", str(exc)))
            continue
        if isinstance(got, str) and got == "stop":
            break
        dc.send(0, ("ok", facts(got), got))
