"""One seed derivation for everything random in training: data order, dropout, head initialisation."""
from __future__ import annotations

import hashlib


def seed_from(*parts) -> int:
    """One stable 63-bit seed from several parts (ints, strings); the same on every run and machine."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
