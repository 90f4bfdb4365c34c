"""An object living in a background process: the training loop hands it work and carries on.

Measuring curvature costs a handful of Hessian-vector products, each two to three training steps
of work (``benchmarks/training_overhead.py``), so a synchronous measurement every 100 steps adds
10–20 % to a small model's run however few products the warm-started eigensolver takes. With a
spare core (or a GPU process beside the trainer) the measurement can run on a snapshot of the
parameters instead, while training goes on: the loop pays only for the snapshot.

:class:`BackgroundActor` holds a copy of one object (a measurer) in the single worker of a
:class:`~concurrent.futures.ProcessPoolExecutor` (forked on the CPU, spawned for CUDA). Calls
run there one at a time in the order they were submitted, so an object whose methods update its
own state (a warm-started eigensolver) evolves exactly as it would in the calling process.
Requests and results travel as pickled bytes, tensors by value (no shared-memory handles whose
lifetime the caller must manage).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import multiprocessing
import os
import pickle
import signal
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import torch

from landscope.errors import InputError, LandscopeError

_OBJECT: Any = None  # the worker's copy


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class _Pickler(pickle.Pickler):
    """Plain CPU tensors as NumPy arrays: 30× cheaper than ``torch.save`` for a small state dict."""

    def reducer_override(self, obj: Any) -> Any:
        if (
            type(obj) is torch.Tensor
            and obj.device.type == "cpu"
            and not obj.requires_grad
            and obj.dtype in _NUMPY_DTYPES
            and not obj.is_conj()
            and not obj.is_neg()
        ):
            return _tensor, (obj.numpy(),)
        return NotImplemented


_NUMPY_DTYPES = {
    torch.float64,
    torch.float32,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
}


def dumps(obj: Any) -> bytes:
    """``obj`` as bytes: tensors by value, modules and functions by reference to their code."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    """Inverse of :func:`dumps` (the bytes come from our own process: trusted)."""
    return pickle.loads(data)  # noqa: S301


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``module``'s parameters and buffers: a snapshot the loop may move past."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _die_with_parent() -> None:
    """Linux: have the kernel stop this worker when its parent dies (e.g. a SIGKILLed run)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _install(obj: Any, threads: int, pickled: bool, close_fds: tuple[int, ...], parent: int) -> None:
    global _OBJECT
    if sys.platform.startswith("linux"):
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)
    for fd in close_fds:  # e.g. a run's lock: a forked copy must not keep it held
        with contextlib.suppress(OSError):
            os.close(fd)
    torch.set_num_threads(threads)
    _OBJECT = loads(obj) if pickled else obj


def _call(method: str, args: bytes) -> bytes:
    return dumps(getattr(_OBJECT, method)(*loads(args)))


class BackgroundError(LandscopeError):
    """The background worker died."""


@contextlib.contextmanager
def _worker_alive() -> Iterator[None]:
    try:
        yield
    except BrokenProcessPool as e:
        raise BackgroundError(
            "the background measurement process died (out of memory, or killed); "
            "rerun with background=False to see the error"
        ) from e


class BackgroundActor:
    """A copy of ``obj`` in one worker process; its methods run there, in submission order.

    ``actor = BackgroundActor(measurer)``; ``actor.submit("measure", state, tag=t)`` returns at
    once; :meth:`ready` returns the finished ``(tag, result)`` pairs in order without waiting;
    :meth:`drain` waits for all; :meth:`call` runs one method and waits (e.g. ``state_dict`` for a
    checkpoint). Close it (or use it as a context manager) to stop the worker.

    Args:
        obj: inherited by a forked worker as it is; a spawned one (``cuda=True``, or no fork on
            the platform) gets it pickled, so its classes and functions must be importable (a
            model class defined in a script works under ``if __name__ == "__main__":``; a lambda
            loss does not).
        threads: torch threads of the worker (default 1: it runs beside the training loop).
        cuda: ``obj`` holds CUDA tensors (then the worker is spawned, not forked).
        close_fds: file descriptors a forked worker closes at once (a run's lock and files).
    """

    def __init__(
        self, obj: Any, threads: int = 1, cuda: bool = False, close_fds: tuple[int, ...] = ()
    ) -> None:
        if not isinstance(threads, int) or threads < 1:
            raise InputError(f"threads must be a positive integer, got {threads!r}")
        # fork starts in milliseconds and inherits obj as it is (lambdas, classes defined in a
        # notebook), as DataLoader workers do; CUDA cannot be used in a forked child, so a model
        # on the GPU is sent to a spawned worker instead (which imports torch: seconds).
        fork = not cuda and "fork" in multiprocessing.get_all_start_methods()
        if fork:
            payload = obj
        else:
            try:
                payload = dumps(obj)
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                raise InputError(
                    f"cannot send {type(obj).__name__} to a background process: {e}. "
                    "Its model and loss must be importable (no lambdas or locally "
                    "defined classes); measure in the foreground instead "
                    "(background=False)"
                ) from e
        ctx = multiprocessing.get_context("fork" if fork else "spawn")
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=ctx,
            initializer=_install,
            initargs=(payload, threads, not fork, tuple(close_fds), os.getpid()),
        )
        self._pending: deque[tuple[Any, Future]] = deque()

    def submit(self, method: str, *args: Any, tag: Any = None) -> None:
        """Queue ``obj.method(*args)``; its result comes back, with ``tag``, from :meth:`ready`."""
        with _worker_alive():
            self._pending.append((tag, self._pool.submit(_call, method, dumps(args))))

    def _result(self, future: Future) -> Any:
        with _worker_alive():
            return loads(future.result())

    def ready(self) -> list[tuple[Any, Any]]:
        """The ``(tag, result)`` of the calls finished so far, in submission order (no waiting)."""
        out = []
        while self._pending and self._pending[0][1].done():
            tag, future = self._pending.popleft()
            out.append((tag, self._result(future)))
        return out

    def drain(self) -> list[tuple[Any, Any]]:
        """Wait for every queued call; their ``(tag, result)`` in submission order."""
        out = []
        while self._pending:
            tag, future = self._pending.popleft()
            out.append((tag, self._result(future)))
        return out

    @property
    def n_pending(self) -> int:
        """Calls queued or running."""
        return len(self._pending)

    def call(self, method: str, *args: Any) -> Any:
        """Run ``obj.method(*args)`` after the queued calls and return its result."""
        if self._pending:
            raise InputError("call() needs the queue drained first (results would be lost)")
        return self._result(self._pool.submit(_call, method, dumps(args)))

    def close(self) -> None:
        """Stop the worker (queued calls are cancelled)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def __enter__(self) -> BackgroundActor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
