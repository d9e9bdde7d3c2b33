"""Provenance: what produced a result (git commit, library versions, hardware).

Every result record carries `environment()` so that a number can be traced
back to the code, the libraries and the machine that made it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

# Libraries whose versions change numbers or timings.
TRACKED_PACKAGES = ("torch", "torchvision", "numpy", "ray", "dvc", "pandas", "seaborn", "timm")


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The HEAD commit, with a `-dirty` suffix when tracked files differ; 'unknown' outside git."""
    cwd = Path(cwd or os.getcwd())
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def package_versions(names=TRACKED_PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str | torch.device | None = None) -> dict:
    """The machine a measurement ran on: CPU, thread count and, on CUDA, the GPU."""
    hw = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu_name": None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
    }
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        hw["gpu_name"] = torch.cuda.get_device_name(dev)
    elif torch.cuda.is_available():
        hw["gpu_name"] = torch.cuda.get_device_name(0)
    return hw


def environment(device: str | torch.device | None = None, cwd=None) -> dict:
    """Everything a result needs to be traced: git commit, versions, hardware."""
    return {
        "git_commit": git_commit(cwd),
        "versions": package_versions(),
        "hardware": hardware(device),
    }
