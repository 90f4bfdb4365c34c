"""Background measurement: a worker process measures snapshots while training goes on.

The rows must be exactly those of foreground measurement (same numbers, same order), a run killed
while measurements were in flight must resume to the same file, and failures must be clear.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import landscope as ls
from landscope.background import BackgroundActor, BackgroundError
from landscope.data import load_mnist1d
from landscope.errors import InputError
from landscope.models import get_loss, mlp
from landscope.training import MeasureConfig, OptimizerSpec, Trainer


class Counter:
    """A stateful object: calls must run in order on one copy."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, x: int) -> int:
        self.total += x
        return self.total

    def fail(self) -> None:
        raise ValueError("bad request 7")

    def pid(self) -> int:
        return os.getpid()


def test_actor_runs_calls_in_order_on_one_copy():
    obj = Counter()
    with BackgroundActor(obj) as actor:
        for i in range(1, 6):
            actor.submit("add", i, tag=i)
        assert [r for _, r in actor.drain()] == [1, 3, 6, 10, 15]
        assert obj.total == 0  # the caller's object is untouched
        actor.submit("add", 100, tag="x")
        time.sleep(0.2)
        assert actor.ready() == [("x", 115)] and actor.n_pending == 0
        assert actor.call("pid") != os.getpid()
        actor.submit("fail")
        with pytest.raises(ValueError, match="bad request 7"):
            actor.drain()


def test_actor_reports_a_dead_worker_and_an_unpicklable_object():
    with BackgroundActor(Counter()) as actor:
        pid = actor.call("pid")
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        with pytest.raises(BackgroundError, match="process died"):
            actor.submit("add", 1)
            actor.drain()
    holder = Counter()
    holder.fn = lambda x: x  # a spawned worker (CUDA) needs the object pickled
    with pytest.raises(InputError, match="cannot send Counter to a background process"):
        BackgroundActor(holder, cuda=True)
    with pytest.raises(InputError, match="threads must be a positive integer, got 0"):
        BackgroundActor(Counter(), threads=0)


def _trainer(background: bool, optimizer: OptimizerSpec, store=None) -> Trainer:
    ds = load_mnist1d(n_train=600, n_test=200)
    torch.manual_seed(0)
    model = mlp(40, 10, width=24, depth=2, activation="tanh")
    return Trainer(
        model,
        get_loss("ce"),
        ds.train,
        test_data=ds.test,
        optimizer=optimizer,
        steps=120,
        batch_size=50,
        seed=0,
        store=store,
        measure=MeasureConfig(every=20, k=2, hessian_samples=128, background=background),
    )


@pytest.mark.parametrize(
    "optimizer",
    [OptimizerSpec(name="sgd", lr=0.2, momentum=0.9), OptimizerSpec(name="adam", lr=0.01)],
    ids=["momentum", "adam"],
)
def test_background_rows_equal_foreground_rows(optimizer, one_thread):
    fg = _trainer(False, optimizer).fit()
    seen: list[int] = []
    trainer = _trainer(True, optimizer)
    trainer.progress = lambda row: seen.append(row["step"])
    bg = trainer.fit()
    assert bg.metrics == fg.metrics
    assert seen == list(range(121))  # every row, in order, once
    assert sorted(bg.eigen) == sorted(fg.eigen) == list(range(0, 121, 20))
    for t in fg.eigen:
        assert torch.equal(bg.eigen[t].vectors, fg.eigen[t].vectors)
    if optimizer.name == "adam":
        assert [r.get("preconditioned") for r in bg.metrics if "eigenvalues" in r][:2] == [False, True]
    # the tracker's state came back from the worker (a checkpoint needs it)
    assert trainer.measurer.tracker.n_updates == 7


def _config(background: bool) -> dict:
    return {
        "seed": 1,
        "data": {"name": "mnist1d", "n_train": 600, "n_test": 200},
        "model": {"name": "mlp", "width": 24, "depth": 2, "activation": "tanh"},
        "loss": "ce",
        "optimizer": {"name": "sgd", "lr": 0.1},
        "train": {"steps": 150, "batch_size": 50},
        "measure": {"every": 10, "k": 2, "hessian_samples": 128, "background": background},
    }


_CHILD = textwrap.dedent("""
    import sys, time, torch, yaml, landscope as ls
    torch.set_num_threads(1)
    if __name__ == "__main__":
        ls.train(yaml.safe_load(open(sys.argv[1])), sys.argv[2], progress=lambda row: time.sleep(0.01))
""")


@pytest.mark.slow
def test_background_run_killed_in_flight_resumes_to_the_same_file(tmp_path, one_thread):
    reference = ls.train(_config(False), tmp_path / "fg", progress=False)
    (tmp_path / "cfg.yaml").write_text(json.dumps(_config(True)))
    out = tmp_path / "bg"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "cfg.yaml"), str(out)])
    deadline = time.time() + 120
    while child.poll() is None:
        lines = (out / "metrics.jsonl").read_text().count("\n") if (out / "metrics.jsonl").exists() else 0
        if lines >= 45:
            break
        assert time.time() < deadline, "child run made no progress"
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    written = (out / "metrics.jsonl").read_text()
    assert written.count("\n") < 151, "the kill missed the run"
    resumed = ls.train(_config(True), out, progress=False)  # the lock is free at once
    assert resumed.state == "completed"
    final = (out / "metrics.jsonl").read_text()
    assert final == (tmp_path / "fg" / "metrics.jsonl").read_text()
    assert final.startswith(written[: written.rfind("\n") + 1])
    for step in reference.eigen_steps:
        assert np.array_equal(resumed.eigen(step).vectors, reference.eigen(step).vectors)


def test_background_monitor_records_equal_foreground_ones(one_thread):
    ds = load_mnist1d(n_train=600, n_test=100)
    X, y = ds.train
    records = {}
    for background in (False, True):
        torch.manual_seed(0)
        model = mlp(40, 10, width=24, depth=2, activation="relu")
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        g = torch.Generator().manual_seed(0)
        with ls.SharpnessMonitor(
            model, get_loss("ce"), (X[:64], y[:64]), every=10, k=2, background=background
        ) as mon:
            for _ in range(60):
                idx = torch.randint(0, len(X), (32,), generator=g)
                opt.zero_grad()
                get_loss("ce")(model(X[idx]), y[idx]).backward()
                opt.step()
                mon.step(opt)
        records[background] = [(r.step, r.eigenvalues, r.threshold, r.status) for r in mon.history]
    assert records[True] == records[False]
    assert [s for s, *_ in records[True]] == [1, 10, 20, 30, 40, 50, 60]
