"""Measuring engines: latency, accuracy (and, with the adaptation issue, memory and energy)."""
