"""How names and numbers are written in a config file, apart from the section schemas.

Section names and keys match loosely (:func:`normalize_section`, :func:`normalize_key`), and
numbers read from YAML remember their text: ``id: 0600`` is the integer 384 to YAML but the
node ID ``"0600"`` to its section schema.  Kept apart from :mod:`mesh.config.schema` (and
free of imports) because the config cache and a node's early start use them too.
"""

from __future__ import annotations


class SourceInt(int):
    """An int read from YAML that remembers its source text (so ``id: 0600`` stays ``"0600"`` for a string key)."""

    text: str

    def __new__(cls, value: int, text: str) -> SourceInt:
        obj = super().__new__(cls, value)
        obj.text = text
        return obj


class SourceFloat(float):
    """A float read from YAML that remembers its source text (so ``version: 1.10`` stays ``"1.10"``)."""

    text: str

    def __new__(cls, value: float, text: str) -> SourceFloat:
        obj = super().__new__(cls, value)
        obj.text = text
        return obj


def normalize_key(name: str) -> str:
    """Canonical form of a key for matching: lowercase, with ``-`` and ``_`` removed (``Bind_Addr`` → ``bindaddr``)."""
    return name.lower().replace("-", "").replace("_", "")


def normalize_section(name: str) -> str:
    """Canonical form of a section name for matching: lowercase, ``_`` read as ``-`` (``TCP_Listener`` → ``tcp-listener``)."""
    return name.lower().replace("_", "-")
