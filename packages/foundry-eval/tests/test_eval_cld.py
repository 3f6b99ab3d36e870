"""Compact letter display (Piepho insert-absorb) on hand-made significance patterns: real letters."""

from __future__ import annotations

import pytest

from foundry_core.errors import DataError
from foundry_eval.stats.cld import compact_letters


def test_no_differences_share_one_letter():
    assert compact_letters(["A", "B", "C"], []) == {"A": "a", "B": "a", "C": "a"}


def test_all_different():
    sig = [("A", "B"), ("A", "C"), ("B", "C")]
    assert compact_letters(["A", "B", "C"], sig) == {"A": "a", "B": "b", "C": "c"}


def test_chain_overlap():
    # A differs from C only: A=a, B=ab, C=b
    assert compact_letters(["A", "B", "C"], [("A", "C")]) == {"A": "a", "B": "ab", "C": "b"}


def test_four_models_two_groups_with_bridge():
    # A,B top; D bottom; C not separated from B or D
    sig = [("A", "C"), ("A", "D"), ("B", "D")]
    letters = compact_letters(["A", "B", "C", "D"], sig)
    assert letters == {"A": "a", "B": "ab", "C": "bc", "D": "c"}
    for a, b in sig:  # differing pairs share no letter
        assert not set(letters[a]) & set(letters[b])
    for a, b in [("A", "B"), ("B", "C"), ("C", "D")]:  # the others share one
        assert set(letters[a]) & set(letters[b])


def test_isolated_middle_and_order_of_letters():
    # B differs from everyone, A and C do not differ: letters follow the best-first order
    sig = [("A", "B"), ("B", "C")]
    assert compact_letters(["A", "B", "C"], sig) == {"A": "a", "B": "b", "C": "a"}


def test_unknown_model_is_an_error():
    with pytest.raises(DataError, match="unknown model"):
        compact_letters(["A", "B"], [("A", "Z")])
