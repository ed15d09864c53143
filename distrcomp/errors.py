"""The exception types distrcomp raises, beyond the built-in ones.

Built-ins are used where they fit: ``ValueError`` for an out-of-range node id or tag,
``TypeError`` for an object that cannot be pickled, ``TimeoutError`` for a ``recv``
that waited longer than its ``timeout``. The types here cover what has no built-in.
"""

from __future__ import annotations

__all__ = ["DistrCompError", "MessageDecodeError"]


class DistrCompError(Exception):
    """Base class of the errors specific to distrcomp."""


class MessageDecodeError(DistrCompError):
    """A message arrived but could not be turned back into an object on this node.

    Typical cause: the sender pickled an instance of a class that cannot be imported on the
    receiving node. The message is consumed; the next ``recv`` gets the next message.
    """

    def __init__(self, src: int, tag: int, reason: str) -> None:
        super().__init__(f"message from node {src} (tag {tag}) could not be decoded: {reason}")
        self.src = src
        self.tag = tag
