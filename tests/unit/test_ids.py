"""Image ids: unguessable, and never parsed loosely."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiled.ids import is_valid_id, new_id


def test_new_ids_are_32_lowercase_hex_and_distinct():
    """new_id gives 128 random bits as 32 lowercase hex digits, never twice the same."""
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(is_valid_id(i) for i in ids)


def test_new_ids_use_every_bit():
    """Every one of the 128 bits varies across ids (no fixed or counter bits)."""
    ors, ands = 0, (1 << 128) - 1
    for _ in range(2000):
        value = int(new_id(), 16)
        ors |= value
        ands &= value
    assert ors == (1 << 128) - 1
    assert ands == 0


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0" * 31,
        "0" * 33,
        "A" * 32,
        "g" * 32,
        " " + "0" * 31,
        "0" * 32 + "\n",
        "0" * 32 + "_small",
        "../" + "0" * 29,
        "\uff10" * 32,  # full-width digits
    ],
)
def test_near_misses_are_not_ids(value):
    """Upper case, wrong length, whitespace, suffixes and look-alike digits are refused."""
    assert not is_valid_id(value)


@given(st.text(max_size=40))
def test_only_exact_ids_pass(value):
    """Whatever the text, it is an id exactly when it is 32 chars of 0-9a-f."""
    expected = len(value) == 32 and all(c in "0123456789abcdef" for c in value)
    assert is_valid_id(value) == expected
