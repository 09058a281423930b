"""ONNX tools shared by the evolve search and the compiler: export from torch, static INT8
Q/DQ quantization."""
