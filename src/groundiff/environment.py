"""What groundiff runs on: library versions, device and dtype, for bug reports and manifests."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import torch

import groundiff

REPORTED_PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "safetensors", "numpy")


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def environment_report() -> dict[str, str]:
    """Versions of groundiff, Python and the libraries it runs on, plus the compute device."""
    report = {"groundiff": groundiff.__version__, "python": platform.python_version()}
    report.update({name: package_version(name) for name in REPORTED_PACKAGES})
    if torch.cuda.is_available():
        report["device"] = f"cuda ({torch.cuda.get_device_name(0)})"
        report["dtype"] = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    else:
        report["device"] = f"cpu ({torch.get_num_threads()} threads)"
        report["dtype"] = "float32"
    return report
