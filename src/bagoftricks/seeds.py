"""The one seed-derivation function of bagoftricks: every random stream is seeded from a tuple.

A stream is named by the run's seed, a purpose string and positions, e.g. (seed, "order", epoch) for
the data order of an epoch or (seed, "step-device", epoch, step, rank) for the per-image draws of a
training step. Deriving instead of drawing seeds is what makes a resumed run bit-exact: step s of
epoch e gets the same generators whether the run got there in one go or was resumed.
"""
from __future__ import annotations

import hashlib
import struct


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints/strings, stable across processes, machines and Python runs.

    ``hash()`` is salted per process for strings, so it cannot be used: a DataLoader worker and the main
    process must derive the same seed for the same (seed, epoch, index).
    """
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        if isinstance(p, str):
            b = p.encode()
            h.update(b"s" + struct.pack("<I", len(b)) + b)
        else:
            h.update(b"i" + int(p).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)
