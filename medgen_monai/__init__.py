"""medgen-monai: MONAI bundles that generate synthetic medical images and reports from rich text."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
