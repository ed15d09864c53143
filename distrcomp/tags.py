"""The wildcards of ``recv`` and ``probe``: receive from any node, with any tag."""

__all__ = ["ANY_SOURCE", "ANY_TAG"]

ANY_SOURCE = -1
ANY_TAG = -1
