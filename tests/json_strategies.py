"""Hypothesis settings and JSON strategies shared by the property tests of decoders."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Deterministic (derandomized, no example database) and tolerant of a busy 2-core machine
#: (no deadline).
PROPS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


def json_values(strings: st.SearchStrategy[str] = st.text(max_size=12), *,
                keys: st.SearchStrategy[str] = st.text(max_size=6),
                max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON document (finite floats, integers past 64 bits), nested a few levels."""
    scalars = (st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
               | st.floats(allow_nan=False, allow_infinity=False) | strings)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=max_leaves)
