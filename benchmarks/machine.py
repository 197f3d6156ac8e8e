"""What machine a benchmark ran on, in the words its docs table uses (one helper for every
script in benchmarks/, which put this folder on sys.path by being run from it)."""

from __future__ import annotations

import os
import platform
import subprocess


def cpu_name() -> str:
    """lscpu's model name, else what platform knows."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """CPU model, core count and the load average when the benchmark started."""
    return f"{cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"
