"""measure.around_instabilities: every step from one before each instability to one after it.

The trainer's online detector is the analyses' rule (landscope.training.detector), so the windows it
measures are those `find_instabilities` finds afterwards; the steps before a start come from a ring
buffer of snapshots, so they must equal a direct measurement at those parameters; and the rows must
be as deterministic and resumable as every other row, in the foreground and in the background.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import landscope as ls
from landscope.analysis import find_instabilities
from landscope.experiments.common import base_config, with_
from landscope.experiments.demo import demo_config
from landscope.training import build_run, parse_config
from landscope.training.detector import DEFAULT_DELTA, InstabilityDetector, detect


def _windows_measured(run: ls.Run, delta: float) -> tuple[int, list[tuple[int, int | None]]]:
    """How many instabilities at ``delta``, and those missing a row from start − 1 to end + 1."""
    measured = {r["step"] for r in run.measurements if r.get("eigenvalues")}
    last = run.metrics[-1]["step"]
    events = find_instabilities(run, delta)
    missing = [
        (e.start, e.end)
        for e in events
        if not all(
            s in measured for s in range(e.start - 1, min(e.end if e.end is not None else last, last - 1) + 2)
        )
    ]
    return len(events), missing


@pytest.mark.slow
def test_eta_03_run_has_every_step_of_every_instability_and_the_regular_cadence(tmp_path):
    """The acceptance run: full-batch GD at η = 0.3 on MNIST-1D (MSE, tanh MLP), default δ."""
    cfg = with_(
        base_config("quick"),
        **{"optimizer.lr": 0.3, "measure.around_instabilities": True, "measure.save_predictions": False},
    )
    run = ls.train(cfg, tmp_path / "around", progress=False)
    n, missing = _windows_measured(run, DEFAULT_DELTA)
    assert n >= 2 and missing == [], f"{n} instabilities, windows without rows: {missing}"
    every = cfg["measure"]["every"]
    cadence = [r["step"] for r in run.cadence_measurements]
    assert cadence == list(range(0, cfg["train"]["steps"] + 1, every))
    extra = [r for r in run.measurements if r.get("around_instability")]
    assert extra and all(r["step"] % every for r in extra)
    assert [r["step"] for r in run.metrics] == list(range(cfg["train"]["steps"] + 1))  # one row a step
    # a step before a start was measured after the fact, from the ring buffer: it must be the
    # measurement of θ at that step (its stored parameters), not of a later θ
    event = find_instabilities(run)[0]
    before = run.eigen(event.start - 1)
    model, loss_fn, ds = build_run(run.config)
    torch.nn.utils.vector_to_parameters(torch.as_tensor(before.params), model.parameters())
    direct = ls.eigenpairs(ls.HessianOperator(model, loss_fn, ds.train), k=3, tol=1e-8)
    assert np.allclose(before.values, direct.values.numpy(), rtol=1e-4), (before.values, direct.values)
    at_start = run.eigen(event.start)
    assert not np.allclose(at_start.params, before.params)
    # the regular rows measure the same θ as a run without the option (same λ₁ to the solver's
    # tol), compared through the first instability and one cadence row past it (a shorter run)
    end = event.end if event.end is not None else cfg["train"]["steps"]
    stop = min(cfg["train"]["steps"], (end // every + 1) * every)
    plain = ls.train(
        with_(cfg, **{"measure.around_instabilities": False, "train.steps": stop}),
        tmp_path / "plain",
        progress=False,
    )
    a = {r["step"]: r["lambda1"] for r in run.cadence_measurements if r["step"] <= stop}
    b = {r["step"]: r["lambda1"] for r in plain.measurements}
    assert a.keys() == b.keys() and max(a) == stop  # past the instability: stop > end
    assert np.allclose([a[s] for s in a], [b[s] for s in a], rtol=1e-4)
    assert [r["train_loss"] for r in run.metrics[: stop + 1]] == [r["train_loss"] for r in plain.metrics]


def _small(**over: object) -> dict:
    """250 steps at η = 0.5 on 300 samples: instabilities from step ~125 on (3 s)."""
    base = with_(
        demo_config("smoke"),
        **{
            "data.n_train": 300,
            "train.steps": 250,
            "measure.around_instabilities": True,
            "measure.around_deltas": [0.02, 0.1],
        },
    )
    return with_(base, **over)


def test_every_detector_gets_its_windows_and_rows_stay_in_order(tmp_path):
    run = ls.train(
        _small(**{"measure.around_before": 2, "measure.around_after": 3}), tmp_path / "r", progress=False
    )
    for delta in (0.02, 0.1):
        n, _ = _windows_measured(run, delta)
        measured = {r["step"] for r in run.measurements if r.get("eigenvalues")}
        for e in find_instabilities(run, delta):
            end = e.end if e.end is not None else 250
            assert all(s in measured for s in range(e.start - 2, min(end + 3, 251))), (delta, e)
        assert n >= 2
    assert [r["step"] for r in run.metrics] == list(range(251))
    assert run.eigen_steps == [r["step"] for r in run.measurements]


_CHILD = textwrap.dedent("""
    import os, sys, torch, yaml, landscope as ls
    torch.set_num_threads(1)
    cfg = yaml.safe_load(open(sys.argv[1]))
    stop = int(sys.argv[3])
    def progress(row):
        if row["step"] >= stop:
            os._exit(3)  # as abrupt as a kill: nothing is flushed or closed
    ls.train(cfg, sys.argv[2], progress=progress)
""")


@pytest.mark.slow
@pytest.mark.parametrize("background", [False, True])
def test_killed_inside_an_instability_resumes_to_the_same_rows(tmp_path, background, one_thread):
    cfg = _small(**{"measure.background": background, "train.checkpoint_every": 7})
    reference = ls.train(_small(), tmp_path / "ref", progress=False)  # foreground, uninterrupted
    inside = find_instabilities(reference, 0.02)[1]
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
    for n, stop in enumerate((inside.start - 1, inside.start + 2)):  # two kills, then the rest
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(tmp_path / "cfg.yaml"), str(tmp_path / "killed"), str(stop)],
            env=os.environ.copy(),
            check=False,
        )
        assert child.returncode == 3, f"kill {n} at step {stop} missed the run"
    resumed = ls.train(cfg, tmp_path / "killed", progress=False)
    assert resumed.state == "completed"
    killed, ref = (tmp_path / name / "metrics.jsonl" for name in ("killed", "ref"))
    assert killed.read_text() == ref.read_text()
    for step in reference.eigen_steps:
        assert np.array_equal(resumed.eigen(step).values, reference.eigen(step).values)


def test_online_detector_equals_the_offline_rule_and_survives_a_restart():
    rng = np.random.default_rng(3)
    loss = np.exp(-np.arange(400) / 150) * (1 + 0.03 * rng.standard_normal(400))
    loss[[90, 91, 200, 300, 301, 302]] *= [1.5, 1.3, 2.0, 1.2, 1.6, 1.1]
    offline = detect(range(400), loss, 0.1)
    det, online = InstabilityDetector(0.1), []
    for s, v in enumerate(loss):
        if s == 150:  # a resumed run continues from the saved state
            state, det = det.state_dict(), InstabilityDetector(0.5)
            det.load_state_dict(state)
        done = det.update(s, float(v))
        if done is not None:
            online.append(done)
    assert online == [e for e in offline if e.end is not None] and len(online) >= 3
    assert [(e.start, e.end) for e in find_instabilities(ls.analysis.Trace.from_arrays(loss), 0.1)] == [
        (e.start, e.end) for e in offline
    ]


def test_around_needs_full_batch_and_positive_deltas():
    with pytest.raises(ls.ConfigError, match="around_instabilities needs full-batch training"):
        parse_config(
            with_(
                base_config("smoke"),
                **{"optimizer.name": "sgd", "train.batch_size": 50, "measure.around_instabilities": True},
            )
        )
    with pytest.raises(ls.ConfigError, match="around_deltas must be positive, got -0.1"):
        parse_config(with_(base_config("smoke"), **{"measure.around_deltas": [0.02, -0.1]}))
    with pytest.raises(ls.ConfigError, match="around_before"):
        parse_config(with_(base_config("smoke"), **{"measure.around_before": 0}))
    with pytest.raises(ls.InputError, match="must be positive, got 'x'"):
        InstabilityDetector("x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "over",
    [
        {"loss": "mse", "optimizer": {"name": "adam", "lr": 0.01}},  # P⁻¹H: Adam's P in each snapshot
        {
            "data": {"name": "src", "n_train": 400, "n_test": 200, "dim": 20, "n_classes": 5},
            "loss": "ce",
            "model": {"name": "mlp", "width": 32, "depth": 2, "activation": "gelu"},
            "optimizer": {"name": "momentum", "lr": 0.5, "momentum": 0.9},
        },
    ],
    ids=["adam_mse", "momentum_ce_src"],
)
def test_windows_off_the_home_ground(tmp_path, over):
    """Full-batch Adam (preconditioned) and heavy-ball momentum with CE on another data set."""
    cfg = {
        "seed": 3,
        "data": {"name": "mnist1d", "n_train": 400, "n_test": 200},
        "train": {"steps": 400},
        "model": {"name": "mlp", "width": 32, "depth": 2, "activation": "tanh"},
        "measure": {"every": 25, "k": 2, "around_instabilities": True},
        **over,
    }
    run = ls.train(cfg, tmp_path / "r", progress=False)
    n, missing = _windows_measured(run, DEFAULT_DELTA)
    assert run.state == "completed" and n >= 3 and missing == []
    assert not any(r.get("eigen_error") for r in run.measurements)
    assert [r["step"] for r in run.metrics] == list(range(401))
    if over["optimizer"]["name"] == "adam":
        assert all(r.get("preconditioned") for r in run.measurements if r["step"] > 0)
