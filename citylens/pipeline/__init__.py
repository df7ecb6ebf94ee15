"""The after-fit analysis of one run as plain functions: no Lightning, no Hydra (the adapters call these)."""

from citylens.pipeline.variant import ANALYSIS_DIR, Variant, list_variants

__all__ = ["ANALYSIS_DIR", "Variant", "list_variants"]
