"""Byte sizes in config files (``work-limits: maxpayload``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from mesh.config.bytesize import ByteSizeError, format_byte_size, parse_byte_size


@pytest.mark.parametrize("text,size", [
    (0, 0), (4096, 4096), ("4096", 4096), ("512k", 512 << 10), ("512KB", 512 << 10),
    ("100M", 100 << 20), ("100MiB", 100 << 20), ("1g", 1 << 30), (" 2 T ", 2 << 40),
    ("10b", 10)])
def test_sizes(text: object, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("text", [-1, "-1", "1.5M", "M", "10 X", "5iB", True, 1.0, None, ""])
def test_not_sizes(text: object) -> None:
    with pytest.raises(ByteSizeError):
        parse_byte_size(text)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=1 << 50))
def test_format_round_trips(size: int) -> None:
    assert parse_byte_size(format_byte_size(size)) == size


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.none(), st.booleans()))
def test_anything_is_a_size_or_a_typed_error(value: object) -> None:
    try:
        assert parse_byte_size(value) >= 0
    except ByteSizeError:
        pass
