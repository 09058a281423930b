"""Serving runtime: the Engine protocol, its backends, the engine pool. Never imports torch."""
