"""Every figure function writes a non-empty PNG; `landscope analyze` prints its tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import landscope as ls
from landscope.analysis import find_instabilities, flattening, trajectory_similarity
from landscope.cli import app
from landscope.report import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) > 2000


def test_run_figures(eos_run, tmp_path):
    events = find_instabilities(eos_run)
    paths = [
        plots.loss_and_sharpness(eos_run, tmp_path / "a.png", events),
        plots.flattening(
            {"η=0.5": flattening(eos_run, events), "again": flattening(eos_run)}, tmp_path / "b.png"
        ),
        plots.shift_matrix(eos_run, tmp_path / "c.png", events),
        plots.outliers_over_time(eos_run, tmp_path / "d.png"),
        plots.similarity(trajectory_similarity([eos_run, eos_run], eos_run), tmp_path / "e.png"),
        plots.schedule(*eos_run.series("lr"), tmp_path / "f.png"),
    ]
    assert all(_is_png(p) for p in paths)
    figs = plots.run_figures(eos_run, tmp_path / "all")
    assert set(figs) == {"loss_sharpness", "flattening", "shift_matrix", "spectrum", "outliers", "schedule"}
    assert all(_is_png(p) for p in figs.values())


def test_spectrum_with_density(tmp_path):
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))[0]
    lam = torch.cat([torch.linspace(8, 3, 10), torch.linspace(0.5, -0.1, 50)]).double()
    op = ls.DenseOperator(Q @ torch.diag(lam) @ Q.T)
    dens = ls.spectral_density(op, n_probes=4, n_steps=30, seed=0)
    path = plots.spectrum_plot(lam[:30].numpy(), tmp_path / "s.png", density=dens, title="planted")
    assert _is_png(path)


def test_flattening_plot_without_instabilities(tmp_path):
    from landscope.analysis import Trace

    f = flattening(Trace.from_arrays(np.linspace(1, 0.5, 50)))
    assert _is_png(plots.flattening(f, tmp_path / "empty.png"))


def test_cli_analyze(eos_run, tmp_path):
    result = CliRunner().invoke(app, ["analyze", str(eos_run.path), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "instabilities" in result.output and "flattening" in result.output and "shift" in result.output
    assert _is_png(tmp_path / eos_run.path.name / "loss_sharpness.png")
    bad = CliRunner().invoke(app, ["analyze", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "not a run folder" in " ".join(bad.output.split())


@pytest.mark.parametrize("delta", ["0", "-1"])
def test_cli_analyze_bad_delta(eos_run, delta):
    result = CliRunner().invoke(app, ["analyze", str(eos_run.path), "--delta", delta])
    assert result.exit_code == 2 and f"got {float(delta)}" in " ".join(result.output.split())
