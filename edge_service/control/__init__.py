"""Control: the pure policy, its Decision and event types, and the adaptation loop."""
