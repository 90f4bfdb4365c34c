"""Spawning gloo worker processes for the distributed tests, tolerant of gloo's teardown abort."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch.multiprocessing as mp


def spawn(worker: Callable, nprocs: int, args: tuple, files: Sequence[Path], timeout: float = 300) -> None:
    """Run ``worker(rank, *args)`` in ``nprocs`` spawned processes until every one has exited.

    gloo can abort in its own teardown (CI saw SIGABRT, "terminate called without an active
    exception", once in many runs). Only the results are under test: a worker that died before
    writing every one of ``files`` fails the test; one that died after is reported as a warning.
    """
    if sys.platform == "win32":
        pytest.skip("file:// rendezvous")
    context = mp.start_processes(worker, args=args, nprocs=nprocs, start_method="spawn", join=False)
    try:
        while not context.join(timeout=timeout):
            pass
    except mp.ProcessExitedException as exc:
        if exc.signal_name is None or not all(f.exists() for f in files):
            raise
        warnings.warn(f"a gloo worker died after writing its results: {exc}", stacklevel=2)
