"""Seeds for independent random streams derived from the one user seed.

Each estimator draws from its own stream, ``derive_seed(seed, "trace")`` and so on, so adding or
switching off one estimator never changes the random numbers of another, and the same command
gives the same numbers.
"""

from __future__ import annotations

import zlib


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose``, a stable function of ``(seed, purpose)`` (CRC-32 based,
    independent of Python's hash randomisation)."""
    mixed = (
        zlib.crc32(purpose.encode("utf-8")) * 0x9E3779B97F4A7C15 + int(seed) * 0xBF58476D1CE4E5B9
    )
    return mixed % (2**63 - 1)
