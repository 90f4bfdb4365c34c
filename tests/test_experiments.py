"""Every experiment's smoke variant runs and its report is self-contained HTML with every figure;
sweeps resume point by point; the CLI commands of DESIGN §2."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import landscope as ls
from landscope.cli import app
from landscope.experiments import list_experiments, run_experiment, sweep_points
from landscope.report.html import render_experiment, render_run, render_sweep

ALL = [e.name for e in list_experiments()]


class _Page(HTMLParser):
    """Collects images, tables and external references of a page (and fails on bad nesting)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []
        self.tables = 0
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag == "table":
            self.tables += 1
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        opened = self.stack[-1] if self.stack else None
        assert opened == tag, f"</{tag}> closes <{opened}>"
        self.stack.pop()


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.stack == [], f"unclosed tags {page.stack}"
    return page


def test_registry_has_the_experiments_of_design_7_and_issue_13():
    wang = [n for n in ALL if n.startswith("wang2023.")]
    gilmer = [n for n in ALL if n.startswith("gilmer2021.")]
    assert len(wang) == 12 and len(gilmer) == 6
    assert "wang2023.second_dataset" in wang
    assert {"wang2023.long_horizon", "wang2023.cooling"} <= set(wang)


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_smoke_variant_writes_a_complete_report(name, smoke_root):
    """`--smoke --seeds 2`: every claim carries both seeds, an interval (or none) and a verdict."""
    result = run_experiment(name, "smoke", smoke_root, seeds=2)
    page_path = render_experiment(result)
    page = parse(page_path)
    assert page.external == []
    assert len(page.images) == len(result.figures)
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in page.images)
    for spec in result.figures:
        assert (result.folder / "figures" / f"{spec.name}.png").stat().st_size > 1000
    doc = json.loads((result.folder / "claims.json").read_text())
    claims = doc["claims"]
    assert doc["seeds"] == [0, 1] and len(claims) == len(result.claims)
    assert all(c["passed"] in (True, False, None) and c["measured"] and c["criterion"] for c in claims)
    verdicts = {"pass", "fail", "inconclusive", "reported", "not measured"}
    for c in claims:
        assert len(c["seeds"]) == 2 and c["verdict"] in verdicts, c
        assert c["interval"] is None or (len(c["interval"]) == 2 and c["interval"][0] <= c["interval"][1])
        finite = [v for v in c["seeds"] if v is not None]
        assert (c["interval"] is not None) == (len(finite) == 2), c
        for row in c["sensitivity"]:
            assert row["delta"] in (0.01, 0.02, 0.05, 0.1) and len(row["seeds"]) == 2
    html_text = page_path.read_text()
    if result.claims:
        assert "95 % interval" in html_text and "seeds 0, 1" in html_text
    if result.claims:
        assert "claim" in page_path.read_text() and page.tables >= 1


def _sweep_doc(tmp_path: Path) -> Path:
    doc = {
        "seed": 0,
        "data": {"name": "src", "n_train": 120, "n_test": 60, "dim": 6, "n_classes": 3},
        "model": {"name": "mlp", "width": 8, "depth": 1},
        "loss": "ce",
        "optimizer": {"name": "gd", "lr": 0.1},
        "train": {"steps": 20},
        "measure": {"every": 10, "k": 1},
        "sweep": {"optimizer.lr": [0.1, 0.5], "seed": [0, 1]},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_sweep_runs_every_point_and_resumes(tmp_path):
    cfg = _sweep_doc(tmp_path)
    points = sweep_points(cfg, tmp_path / "out")
    assert [p.folder.name for p in points] == [
        "optimizer.lr=0.1,seed=0",
        "optimizer.lr=0.1,seed=1",
        "optimizer.lr=0.5,seed=0",
        "optimizer.lr=0.5,seed=1",
    ]
    result = CliRunner().invoke(app, ["sweep", str(cfg), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    before = {p.folder.name: (p.folder / "metrics.jsonl").read_bytes() for p in points}
    # a killed point: its metrics cut mid-way and its status set back to running → it resumes
    victim = points[1].folder
    (victim / "status.json").write_text(json.dumps({"status": "running"}))
    again = CliRunner().invoke(app, ["sweep", str(cfg), "--out", str(tmp_path / "out")])
    assert again.exit_code == 0, again.output
    assert {p.folder.name: (p.folder / "metrics.jsonl").read_bytes() for p in points} == before
    assert parse(tmp_path / "out" / "report.html").images


def test_sweep_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sweep": {"optimizer.lr": []}}))
    r = CliRunner().invoke(app, ["sweep", str(bad)])
    assert r.exit_code == 2 and "non-empty list" in " ".join(r.output.split())
    bad.write_text(yaml.safe_dump({"sweep": {"optimizer.lr": [0.1, -1.0]}}))
    r = CliRunner().invoke(app, ["sweep", str(bad)])
    assert r.exit_code == 2 and "optimizer.lr = -1.0" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["sweep", str(_sweep_doc(tmp_path)), "--backend", "slurm"])
    assert r.exit_code == 2 and "slurm" in r.output


def test_cli_list_reproduce_demo_report(tmp_path):
    listed = CliRunner().invoke(app, ["list", "gilmer2021"])
    assert listed.exit_code == 0 and "gilmer2021.warmup" in listed.output and "wang2023" not in listed.output
    for args, msg in (
        (["reproduce", "nature2030"], "unknown paper 'nature2030'"),
        (["reproduce", "wang2023", "nonsense"], "unknown experiment 'nonsense'"),
        (["reproduce", "wang2023", "lr_sweep", "--smoke", "--quick"], "at most one"),
        (
            ["reproduce", "wang2023", "lr_sweep", "--smoke", "--seeds", "0"],
            "seeds must be a positive integer (how many seeds each experiment runs), got 0",
        ),
        (["list", "nature2030"], "unknown paper"),
    ):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and msg in " ".join(r.output.split()), r.output
    demo = CliRunner().invoke(app, ["demo", "--smoke", "--out", str(tmp_path)])
    assert demo.exit_code == 0, demo.output
    page = tmp_path / "landscope.demo" / "report.html"
    assert str(page) in " ".join(demo.output.split()).replace(" ", "") or page.name in demo.output
    assert len(parse(page).images) == 3
    run_dir = next((tmp_path / "runs").iterdir())
    r = CliRunner().invoke(app, ["report", str(run_dir)])
    assert r.exit_code == 0 and parse(run_dir / "report.html").images


def test_render_run_and_sweep_directly(eos_run, tmp_path):
    page = parse(render_run(eos_run, tmp_path / "run"))
    assert len(page.images) == 6 and page.external == []
    base = yaml.safe_load(Path("configs/eos_mlp.yaml").read_text())
    points = sweep_points({**base, "sweep": {"seed": [0]}}, tmp_path)
    assert parse(render_sweep(points, [eos_run], tmp_path / "sweep")).images
    assert ls.load_run(eos_run.path).state == "completed"
