"""Measuring engines: latency, accuracy, memory and energy, per power mode."""
