"""How long building the GPU inventory takes: the captured H100, 8 synthetic H100s, and the
real node when NVML can start.  Read-only: nothing is created or changed on a real GPU.

    python plugins/nvidia_gpu/bench/inventory.py [--rounds N] [--show]

``--show`` also prints what the real reader sees (GPUs, MIG profiles with their placements,
MIG devices, driver) and the first devices of the real inventory, to compare with the fake.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

from dra_nvidia_gpu.inventory import Inventory, build_inventory
from dra_nvidia_gpu.nvml import NvmlError, PynvmlReader
from dra_nvidia_gpu.testing import FakePynvml
from dra_nvidia_gpu.types import NvmlReader

from dra_framework.api.slices import device_json
from dra_framework.api.slicevalidation import device_problems


def _time(build: Callable[[], Inventory], rounds: int) -> tuple[float, float, Inventory]:
    samples, inventory = [], build()
    for _ in range(rounds):
        start = time.perf_counter()
        inventory = build()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples), inventory


def _report(label: str, reader: NvmlReader, rounds: int) -> Inventory:
    for partitionable in (False, True):
        median, best, inventory = _time(
            functools.partial(build_inventory, reader, partitionable=partitionable), rounds)
        problems = sum(len(device_problems(device_json(d))) for d in inventory.devices)
        mode = "partitionable" if partitionable else "plain"
        print(f"{label:<28} {mode:<14} devices={len(inventory.devices):>4} "
              f"counter_sets={len(inventory.counter_sets)} median={median * 1e3:8.3f} ms "
              f"min={best * 1e3:8.3f} ms problems={problems}")
    return inventory


def _show(reader: PynvmlReader, inventory: Inventory) -> None:
    print("driver:", reader.driver())
    for gpu in reader.gpus():
        print("gpu:", gpu)
        for profile in reader.mig_profiles(gpu):
            starts = [(p.start, p.size) for p in profile.placements]
            print(f"  profile {profile.name:<12} id={profile.id:<3} slices={profile.slice_count} "
                  f"count={profile.instance_count} sms={profile.multiprocessor_count} "
                  f"mem={profile.memory_mb} placements={starts}")
        for mig in reader.mig_devices(gpu):
            print("  mig:", mig)
    for device in inventory.devices[:2]:
        print("device:", device_json(device))
    start = time.perf_counter()
    event = reader.wait_event(200)
    print(f"wait_event(200 ms) -> {event} after {time.perf_counter() - start:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args()
    _report("1 GPU (capture)", PynvmlReader(module=FakePynvml.from_capture()), args.rounds)
    _report("8 GPUs (synthetic)", PynvmlReader(module=FakePynvml.synthetic(gpus=8)),
            args.rounds)
    _report("8 GPUs (synthetic, MIG on)",
            PynvmlReader(module=FakePynvml.synthetic(gpus=8, mig=True)), args.rounds)
    try:
        start = time.perf_counter()
        real = PynvmlReader()
        print(f"nvmlInit: {(time.perf_counter() - start) * 1e3:.1f} ms")
    except NvmlError as exc:
        print(f"real node: skipped ({exc})")
        return
    with real:
        inventory = _report("real node", real, max(1, args.rounds // 5))
        if args.show:
            _show(real, inventory)


if __name__ == "__main__":
    main()
