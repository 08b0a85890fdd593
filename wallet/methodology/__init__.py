"""Methodology: the catalogue of green behaviours partners may report, and how each one is quantified."""
