"""NVIDIA GPU backend for dra-framework (entry point ``nvidia-gpu``).

NVML (the ``pynvml`` module of nvidia-ml-py) is imported lazily, when the backend is set up,
so this package imports on machines without a GPU or driver.
"""
