"""Every Python block of the README runs as written (the blocks a section's own test does not run)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from reference import python_blocks

ROOT = Path(__file__).parent.parent
# sections whose block another test runs and checks in depth
ELSEWHERE = {
    "Use it in your loop": "test_monitor.py",
    "Choose a learning rate": "test_lr_finder.py",
    "Transformers and Hugging Face": "test_real_models.py",
}


def test_every_block_is_run_by_a_test():
    sections = {s for s, _ in python_blocks()}
    assert sections - set(ELSEWHERE) == {"Curvature in three lines", "Train while measuring", "Analyse a run"}
    for name, test in ELSEWHERE.items():
        assert f'run_readme_example("{name}")' in (ROOT / "tests" / test).read_text()


@pytest.mark.slow
def test_the_curvature_train_and_analysis_blocks_run_in_order(tmp_path, monkeypatch):
    """In a fresh folder with the repo's configs, one namespace across the blocks, as a reader runs them."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for section, code in python_blocks():
        if section not in ELSEWHERE:
            exec(compile(code, f"README.md: {section}", "exec"), namespace)
    assert namespace["res"].converged and len(namespace["res"].values) == 10
    assert len(namespace["lam1"]) == len(namespace["thr"]) > 0
    assert isinstance(namespace["events"], list)
    assert os.path.isdir(tmp_path / "runs" / "eos")
