"""Offline build: ONNX export (torch), INT8 calibration, engine builders, into the repository."""
