"""Integrations with tools around MONAI. Each module imports its tool lazily: the package never requires it."""

from __future__ import annotations

__all__: list[str] = []
