"""Drop-in for the old DistrComp ``message`` module, running on distrcomp (MPI).

Legacy scripts run unchanged::

    import message as ms
    ms.setup_connection()
    myID, nodes = ms.node_id, ms.n_node
    ms.send((myID + 1) % nodes, "Next to %i is %i" % (myID, (myID + 1) % nodes))
    print(ms.recv((myID - 1 + nodes) % nodes))
    ms.close_connection()

This file is shipped inside the distrcomp package (``distrcomp/compat/``) and is *not* installed
as a top-level module: a module named ``message`` in site-packages would shadow other packages.
``distrcomp run`` puts this directory on the nodes' ``PYTHONPATH``; under plain ``mpiexec``::

    PYTHONPATH=$(distrcomp compat-path) mpiexec -n 4 python legacy.py

It is a thin layer over :mod:`distrcomp`: every message travels through ``distrcomp.send`` /
``distrcomp.recv`` with tag 0 (distrcomp's default tag), so a script may mix ``ms.send`` with
``distrcomp.recv`` while it is being ported.

Kept from the old library: ``node_id`` / ``n_node``, idempotent ``setup_connection`` and
``close_connection``, a ``send`` that never deadlocks against other nodes' sends, a ``send`` to
oneself that raises, and the ``recv(-1)`` quirk (return the id of a node with a message waiting,
without consuming it). Messages are Python objects (pickled); numpy arrays travel as raw buffers.
"""

from __future__ import annotations

import operator
from typing import Any

import distrcomp as _dc

__all__ = [
    "SelfMessageError",
    "close_connection",
    "n_node",
    "node_id",
    "recv",
    "send",
    "setup_connection",
]

node_id: int
n_node: int

# The tag every legacy message travels with. 0 is distrcomp's default, so plain distrcomp calls
# in a half-ported script see the same messages.
_TAG = 0


class SelfMessageError(_dc.DistrCompError, ValueError):
    """A node tried to send a message to itself, or to receive one from itself.

    The old library refused ``send`` to oneself ("Cannot send message to myself"); so no such
    message can ever arrive, and ``recv`` from oneself would wait forever: both raise this.
    A ValueError, so ``except ValueError`` in an old script catches it too.
    """

    def __init__(self, what: str, node: int) -> None:
        if what == "send":
            text = (
                f"send: node {node} cannot send a message to itself (idx={node}); "
                "the legacy message module never allowed it"
            )
        else:
            text = (
                f"recv: node {node} cannot receive from itself (idx={node}): a node cannot send "
                "to itself, so nothing would ever arrive"
            )
        super().__init__(text)
        self.node = node


def __getattr__(name: str) -> Any:
    # node_id and n_node are readable before setup_connection(), as soon as MPI is up: reading
    # either initialises it, exactly as reading distrcomp.node_id does (PEP 562).
    if name in ("node_id", "n_node"):
        return getattr(_dc, name)
    raise AttributeError(f"module 'message' has no attribute {name!r}")


def setup_connection() -> None:
    """Join the job: initialise MPI (on first use) and set ``node_id`` and ``n_node``.

    Collective on the first call: every node of the job must call it (or read ``node_id`` /
    ``n_node``), as every node must reach ``MPI_Init``. Later calls do nothing; calling it
    again after :func:`close_connection` is allowed and changes nothing.
    """
    global node_id, n_node
    node_id = _dc.node_id
    n_node = _dc.n_node


def close_connection() -> None:
    """Declare that this node is done with messaging; never blocks, never raises.

    Calling it twice, or never, is fine. It does not wait for other nodes and does not cut
    anything off: distrcomp delivers the messages still in flight when the process exits
    (its exit handler keeps accepting messages until every node has finished), and warns on
    stderr about messages that arrived but were never received. ``send`` and ``recv`` keep
    working after it, since MPI stays up until the process ends.
    """


def send(idx: int, data: Any) -> None:
    """Send ``data`` to node ``idx``; returns without waiting for ``idx`` to call ``recv``.

    Never deadlocks against other nodes' sends, whatever the message size (a ring where every
    node sends first is fine). Small messages and pickled objects return at once. A large
    numpy array (alone or inside another object) is handed to MPI in place, uncopied, and
    ``send`` returns once the receiving node's distrcomp has taken it, which happens inside any
    distrcomp call there, including its own ``send``: while the receiver computes without
    calling distrcomp, such a ``send`` waits (the old library's background thread did not).
    Value semantics: changing ``data`` afterwards does not change what ``idx`` gets. Order is
    kept between any two nodes.

    Raises SelfMessageError (a ValueError) if ``idx`` is this node; ValueError if ``idx`` is
    not in ``range(n_node)``; TypeError if ``idx`` is not an integer or ``data`` cannot be
    pickled.
    """
    idx = _node_index("send", idx)
    me = _dc.node_id
    if idx == me:
        raise SelfMessageError("send", me)
    _dc.send(idx, data, _TAG)


def recv(idx: int) -> Any:
    """Return the next message from node ``idx``; blocks until there is one.

    With a negative ``idx`` (the old library's ``recv(-1)``): block until some node has a
    message waiting for this node and return *that node's id*, without consuming the message;
    the following ``recv(that_id)`` returns it. When several are waiting, the id of the sender
    whose message arrived first is returned, and keeps being returned until that message is
    received.

    Raises SelfMessageError if ``idx`` is this node (nothing could ever arrive); ValueError if
    ``idx`` is not a node id; TypeError if it is not an integer;
    distrcomp.MessageDecodeError if the message cannot be unpickled.
    """
    idx = _node_index("recv", idx)
    if idx < 0:
        return _dc.probe(_dc.ANY_SOURCE, _TAG)[0]
    me = _dc.node_id
    if idx == me:
        raise SelfMessageError("recv", me)
    return _dc.recv(idx, _TAG)


def _node_index(what: str, idx: Any) -> int:
    try:
        return operator.index(idx)
    except TypeError:
        # The usual cause in a script from the Python 2 days: an id computed with /.
        hint = "; in Python 3, / gives a float: use // for node ids" if isinstance(idx, float) else ""
        raise TypeError(
            f"{what}: idx must be an int node id, got {type(idx).__name__} ({idx!r}){hint}"
        ) from None
