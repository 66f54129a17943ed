"""The fixed fsrecover scan: it finds what ZODB's finds, and it ends at the file's end."""

from __future__ import annotations

import io
import random
import struct

import pytest

from kernel.recover import SCAN_BLOCK, scan_to_end


@pytest.mark.timeout(10)
@pytest.mark.parametrize("tail", range(1, 9))
def test_a_dot_near_the_end_ends_the_scan(tail: int) -> None:
    data = b"\xd5" * 40 + b"." + b"\x00" * (tail - 1)
    assert scan_to_end(io.BufferedReader(io.BytesIO(data)), 4) == 0


def test_a_plausible_length_after_a_dot_is_found() -> None:
    before = b"\xd5" * 100
    data = before + b"." + struct.pack(">Q", 3) + b"\xd5" * 30  # a length below pos: plausible
    found = scan_to_end(io.BufferedReader(io.BytesIO(data)), 4)
    assert found == len(before) + 1 + 8


def test_it_matches_zodb_scan_where_that_one_ends(rng: random.Random) -> None:
    from ZODB.fsrecover import scan

    for _ in range(50):
        data = rng.randbytes(rng.randrange(SCAN_BLOCK * 3)) + b"\xd5" * 16  # no dot at the end
        pos = rng.randrange(len(data))
        assert (scan_to_end(io.BufferedReader(io.BytesIO(data)), pos)
                == scan(io.BufferedReader(io.BytesIO(data)), pos))
