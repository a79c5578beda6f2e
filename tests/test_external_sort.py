"""The external sort gives Python's sorted order whatever the chunk size, and leaves no files behind."""

import random

import pytest

from plmscale.data.external_sort import sorted_records


@pytest.mark.parametrize("chunk_records, fan_in", [(1000, 64), (7, 64), (7, 2), (1, 3)])
def test_same_order_as_sorted(tmp_path, chunk_records, fan_in):
    rng = random.Random(chunk_records * 100 + fan_in)
    records = [(str(rng.randrange(300)), rng.choice(["a", "B", "", "a\x01", "10", "9", "ab"]))
               for _ in range(500)]
    for key in (None, lambda r: int(r[0]), lambda r: (-int(r[0]), r[1])):
        streamed = list(sorted_records(iter(records), tmp_path, key=key, chunk_records=chunk_records,
                                       fan_in=fan_in))
        assert streamed == sorted(records, key=key)
    assert list(tmp_path.iterdir()) == []


def test_runs_are_removed_when_reading_stops_early(tmp_path):
    records = ((str(n),) for n in range(100))
    stream = sorted_records(records, tmp_path, chunk_records=10)
    next(stream)
    assert list(tmp_path.iterdir())
    stream.close()
    assert list(tmp_path.iterdir()) == []


def test_an_error_in_the_input_surfaces_before_any_record(tmp_path):
    def failing():
        yield ("b",)
        yield ("a",)
        raise ValueError("bad input")
    stream = sorted_records(failing(), tmp_path, chunk_records=1)
    with pytest.raises(ValueError, match="bad input"):
        next(stream)
    assert list(tmp_path.iterdir()) == []
