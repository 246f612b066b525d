"""models/state.py: the checkpoint byte format round-trips and refuses damage."""

from __future__ import annotations

import numpy as np
import pytest

from models.state import pack, unpack


def test_round_trip_keeps_dtypes_shapes_and_values() -> None:
    arrays = {
        "a/masses": np.arange(12, dtype=np.int32).reshape(3, 4),
        "a/low": np.array([-np.inf, 0.5]),
        "empty": np.empty(0),
    }
    meta, back = unpack(pack({"format": 1, "x": [1, "y"]}, arrays))
    assert meta == {"format": 1, "x": [1, "y"]}
    assert list(back) == list(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)


def test_same_state_same_bytes() -> None:
    make = lambda: pack({"format": 1}, {"m": np.arange(5, dtype=np.int64)})  # noqa: E731
    assert make() == make()


@pytest.mark.parametrize("cut", [1, 9, 30, -3])
def test_truncated_or_padded_bytes_are_refused(cut: int) -> None:
    blob = pack({"format": 1}, {"m": np.arange(5, dtype=np.int64)})
    with pytest.raises(ValueError, match="scorer state"):
        unpack(blob[:cut] if cut > 0 else blob + b"\0" * -cut)
