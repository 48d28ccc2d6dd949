"""Figures: pure functions from result objects to plotly figures (no computation, no widgets)."""
