"""Simulation: replay a Context trace against the catalog's profiles, no inference."""
