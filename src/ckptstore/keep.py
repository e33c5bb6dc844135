"""Keep policies, as ``ckptstore.keep.linear(5)`` and friends.

This module only re-exports the policies of :mod:`ckptstore.policies` under short names.
"""

from .policies import GcDecision, KeepPolicy, all_, any_of, best, every, exponential, linear

__all__ = ["GcDecision", "KeepPolicy", "all_", "any_of", "best", "every", "exponential", "linear"]
