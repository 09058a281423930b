"""edge-service: context-adaptive DNN inference for NVIDIA Jetson boards (and any Linux box).

Importing the package is cheap and hardware-free: torch, TensorRT, pycuda and jtop are
imported lazily by the few modules that need them.
"""

__version__ = "0.1.0"
