"""TrainState from older checkpoints: fields that were never written load when at their defaults only."""

from __future__ import annotations

import pytest

from foundry_core.train.state import TrainState


def test_legacy_never_written_fields_at_defaults_load():
    state = TrainState.from_dict({"step": 3, "samples": 48, "tokens": 0, "total_steps": 10,
                                  "nonfinite_skipped": 1, "samples_per_source": {}, "tokens_per_source": {}})
    assert (state.step, state.nonfinite_skipped) == (3, 1)
    assert TrainState.from_dict(state.to_dict()) == state


def test_unknown_or_nondefault_legacy_field_is_an_error():
    with pytest.raises(TypeError, match="samples_per_source"):
        TrainState.from_dict({"step": 1, "samples_per_source": {"robot": 5}})
    with pytest.raises(TypeError, match="surprise"):
        TrainState.from_dict({"step": 1, "surprise": 0})
