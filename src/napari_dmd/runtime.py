"""Where work runs: devices, CPU threads and precision checks, and a description of the machine.

One place for what the engine, the CLI, the widgets, the demo models and the benchmarks ask about the
hardware. torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ConfigError

if TYPE_CHECKING:
    import torch


def cpu_bf16_supported() -> bool:
    """True when oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def available_devices() -> list[str]:
    """Device choices for a user: auto, cpu, and cuda / mps where present."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if _mps_available():
        devices.append("mps")
    return devices


def resolve_device(name: str = "auto") -> torch.device:
    """CUDA, then MPS, then CPU for "auto"; otherwise the named device (checked to exist)."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"device {name!r} is not a device name; use one of {', '.join(available_devices())}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if dev.type == "mps" and not _mps_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available; use --device cpu")
    return dev


def usable_cores(cap: int | None = None) -> int:
    """CPU cores this process may run on (its affinity mask where the OS tells), at most ``cap``."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n if cap is None else min(cap, n))


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``), or None when unlimited or unknown."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    return None


def machine_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """CPU model, cores, load, torch version and threads, GPU: what every measured figure must name.

    ``device``: the device the figures were taken on (recorded as ``device``; its GPU name when CUDA).
    """
    import torch

    gpu = None
    if torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    info: dict[str, Any] = {
        "host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
        "cpu_quota": cpu_quota(), "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "os": platform.platform(terse=True), "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "gpu": gpu,
    }
    if device is not None:
        dev = torch.device(device)
        info["device"] = str(dev)
        if dev.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(dev)
    return info
