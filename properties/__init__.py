"""Hypothesis strategies, the table of ops, and the differential and metamorphic properties."""
