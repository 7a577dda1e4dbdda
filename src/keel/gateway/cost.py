"""What a request cost (kept here for callers of the gateway; the function lives in keel.cost)."""

from __future__ import annotations

from keel.cost import cost

__all__ = ["cost"]
