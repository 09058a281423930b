"""Offline, torch-only: the base model, its training, and (later) the multi-branch evolution.

Nothing under edge_service/server, runtime, control or monitor imports this package.
"""
