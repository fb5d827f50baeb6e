"""Small numeric helpers shared by the sparsity modules (rounding that does not depend on parity)."""

from __future__ import annotations

import hashlib
import math

__all__ = ["round_half_up", "keep_count", "derived_seed"]


def round_half_up(x: float) -> int:
    """Nearest integer, halves rounded up (Python's `round` rounds halves to even, which is
    surprising for counts: 2.5 -> 2 but 3.5 -> 4)."""
    return int(math.floor(x + 0.5 + 1e-12))


def keep_count(density: float, size: int, minimum: int = 1) -> int:
    """How many of `size` items to keep at `density` (nearest count, clamped to [minimum, size])."""
    return int(min(size, max(minimum, round_half_up(density * size))))


def derived_seed(namespace: str, *numbers: int) -> int:
    """A 63-bit generator seed hashed from a namespace and integers (e.g. a model's seed and a step).

    Hashed rather than used as is, so a method's generator never replays the draws of another
    generator seeded with the same integer (the global RNG that initialised the weights).
    """
    text = ":".join([namespace, *(str(int(n)) for n in numbers)])
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
