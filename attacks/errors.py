"""Error types of the attacks package: one clear line naming the problem and the fix.

``attacks`` never imports ``robustsparse``, so it defines its own errors. The two user-facing
ones subclass ``ValueError`` (bad input); ``AttackCheckError`` marks an attack that returned an
invalid adversarial example, which is a bug in an attack, not in the caller's input.
"""

from __future__ import annotations

__all__ = ["AttackSpecError", "AttackInputError", "AttackCheckError"]


class AttackSpecError(ValueError):
    """A malformed attack spec: unknown attack or parameter, a bad eps, steps or norm."""


class AttackInputError(ValueError):
    """Images, labels, model or device that cannot be evaluated (wrong shape, range, device)."""


class AttackCheckError(RuntimeError):
    """An attack returned examples outside the eps ball or outside [0, 1], or non-finite values."""
