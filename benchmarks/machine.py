"""What the benchmark scripts share: the machine they ran on and their Markdown tables."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def cpu_name() -> str:
    """The processor's model name (timings are only comparable on the same one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table as lines, followed by a blank line."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (e.g. a background worker)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def versions(dists: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of ``dists`` (``None`` for one that is missing)."""
    out: dict[str, str | None] = {}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def write_results(folder: Path, name: str, doc: dict, md: list[str]) -> None:
    """``folder/name.json`` (every raw number) and ``folder/name.md`` (the tables), then print them."""
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(doc, indent=1))
    (folder / f"{name}.md").write_text("\n".join(md))
    print("\n".join(md))


def sync() -> None:
    """Wait for queued CUDA work before a timer is read (no-op on CPU-only runs)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], reps: int) -> float:
    """Median wall time of ``fn()`` over ``reps`` calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def select_device(name: str, allow_tf32: bool = False) -> torch.device:
    """``--device NAME`` as a device; for CUDA, made current (an index always) and TF32 set.

    cuDNN runs float32 convolutions in TF32 by default (~1e-3 relative rounding): off unless asked,
    so that a float32 solve on the GPU means what it means on the CPU.
    """
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available here")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return device


def gpu_info(device: torch.device) -> dict:
    """The GPU's name, memory, CUDA version and TF32 flags (for ``--device cuda`` runs)."""
    props = torch.cuda.get_device_properties(device)
    return {
        "gpu": props.name,
        "gpu_memory_gib": props.total_memory / 2**30,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss() -> int:
    """Resident set size now (bytes; Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def high_water() -> int:
    """Peak resident set size since the process started or ``VmHWM`` was last reset (bytes)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
