"""Shared fixtures of the NVIDIA GPU backend tests: fake NVML and readers over it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from dra_nvidia_gpu.nvml import PynvmlReader
from dra_nvidia_gpu.testing import FakePynvml


@pytest.fixture
def fake_nvml() -> Callable[..., FakePynvml]:
    """``fake_nvml()``: the captured H100 (MIG off); ``fake_nvml(gpus=8, mig=True)``:
    synthetic H100s (see ``FakePynvml.synthetic``)."""

    def make(*, gpus: int | None = None, mig: bool = False) -> FakePynvml:
        if gpus is None and not mig:
            return FakePynvml.from_capture()
        return FakePynvml.synthetic(gpus=8 if gpus is None else gpus, mig=mig)

    return make


@pytest.fixture
def nvml_reader(fake_nvml: Callable[..., FakePynvml]
                ) -> Iterator[Callable[..., PynvmlReader]]:
    """``nvml_reader(fake=None)``: a ``PynvmlReader`` over ``fake`` (default: the capture),
    closed after the test."""
    readers: list[PynvmlReader] = []

    def make(fake: FakePynvml | None = None) -> PynvmlReader:
        reader = PynvmlReader(module=fake if fake is not None else fake_nvml())
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()
