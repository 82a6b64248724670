"""What the metrics rows say about the hardware: the device (name, count), its peak FLOP/s for MFU, peak
memory."""
from __future__ import annotations

import torch

# Dense bf16 peaks; tf32/fp32 runs count half (the tensor-core tf32 rate).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def device_info(device: torch.device, world_size: int) -> dict[str, object]:
    """{"name", "count"}: every metrics row carries it, so `eval compare` refuses to put wall-clock curves
    of different hardware on one axis."""
    return {"name": device_name(device), "count": int(world_size)}


def device_peak_flops(device: torch.device, precision: str) -> float:
    """Dense bf16 / tf32 peak of known accelerators (0 = unknown: MFU is then not reported)."""
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    for key, bf16 in PEAK_BF16.items():
        if key in name:
            return bf16 if precision == "bf16" else bf16 / 2
    return 0.0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB (host RSS)
