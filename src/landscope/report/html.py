"""Self-contained HTML reports (DESIGN §8): figures embedded as PNG, no external URLs.

One page per run (:func:`render_run`), per sweep (:func:`render_sweep`) and per experiment
(:func:`render_experiment`, with the claims table). Figures are also kept as PNG files beside the
page.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from landscope.analysis import DEFAULT_DELTA, find_instabilities
from landscope.experiments.results import Claim, ExperimentResult, claim_doc
from landscope.experiments.sweep import SweepPoint
from landscope.report import plots
from landscope.report.figures import draw
from landscope.training import Run
from landscope.version import __version__

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.3em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}.pass{background:#e3f6e3}.fail{background:#fbe3e3}
.na{background:#f2f2f2}.inc{background:#fdf3d6}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
.meta{color:#666;font-size:.9em}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).stem)}">'


def _table(header: Sequence[Any], rows: Sequence[Sequence[Any]], classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "—" if x is None else str(x)


def claims_table(claims: Sequence[Claim]) -> str:
    """The claims as an HTML table: per-seed values, 95 % interval and the three-way verdict."""
    rows = [
        (c.text, c.measured, c.criterion, seeds_text(c.seeds), interval_text(c.interval), c.verdict)
        for c in claims
    ]
    classes = [VERDICT_CLASS.get(c.verdict, "na") for c in claims]
    return _table(
        ("claim", "measured (first seed)", "criterion", "per seed", "95 % interval", "verdict"), rows, classes
    )


VERDICT_CLASS = {"pass": "pass", "fail": "fail", "inconclusive": "inc"}
INTERVAL_NOTE = (
    "Each claim's statistic is measured at every seed (initialisation and data order); the "
    "95 % interval is Student's t over seeds (mean ± t₀.₉₇₅,ₙ₋₁·s/√n). Verdict: pass when "
    "the interval lies on the claimed side, fail when it lies on the other side, "
    "inconclusive when it straddles the boundary, or when fewer than two seeds could be "
    "measured (no interval)."
)


def seeds_text(values: Sequence[float | None]) -> str:
    """Per-seed statistics, compactly."""
    return ", ".join("n/a" if v is None else f"{v:.3g}" for v in values)


def interval_text(ci: tuple[float, float] | None) -> str:
    """``[lo, hi]`` or an em dash."""
    return "—" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def sensitivity_table(claims: Sequence[Claim]) -> str:
    """Verdict and interval of every δ-dependent claim at each δ of the sensitivity set."""
    rows = [c for c in claims if c.by_delta]
    if not rows:
        return ""
    deltas = [d for d, _ in rows[0].by_delta]
    body = [
        (c.text, *(f"{w} {interval_text(i) if i else seeds_text(v)}" for _, v, i, w in c.sensitivity()))
        for c in rows
    ]
    return _table(("claim", *(f"δ = {d:g}" for d in deltas)), body)


def _page(title: str, body: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}"
        f'<p class="meta">landscope {__version__} · written {stamp}</p></body></html>'
    )


def _figures_html(figs: Sequence[tuple[Path, str]]) -> str:
    return "".join(f"<figure>{_img(p)}<figcaption>{html.escape(c)}</figcaption></figure>" for p, c in figs)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


CAPTIONS = {
    "loss_sharpness": "Training (and test) loss, and the top Hessian eigenvalues against the stability "
    "threshold; instabilities shaded: heating red, cooling blue.",
    "flattening": "λ₁ at the end of each instability against its index (landscape flattening).",
    "shift_matrix": "Overlap of the top-k eigen-subspaces between every pair of measurements "
    "(landscape shift).",
    "spectrum": "Top eigenvalues at the last measurement; outliers (k*) in red.",
    "outliers": "Top eigenvalues over training and the outlier count k*.",
    "schedule": "Learning rate per step.",
}


def render_run(run: Run, out: str | Path | None = None) -> Path:
    """``report.html`` for one run (default: in the run folder), with its figures."""
    folder = Path(out) if out is not None else run.path
    figures = plots.run_figures(run, folder / "figures")
    events = find_instabilities(run)
    status = dict(run.status)
    last = run.measurements[-1] if run.measurements else (run.metrics[-1] if run.metrics else {})
    summary = [("status", run.state), ("steps", run.metrics[-1]["step"] if run.metrics else 0)]
    summary += [
        (k, last[k])
        for k in ("train_loss", "test_loss", "test_acc", "lambda1", "threshold")
        if last.get(k) is not None
    ]
    mode = run.config.measure.model_mode if run.config else "—"
    summary += [(f"instabilities (δ = {DEFAULT_DELTA:g})", len(events)), ("curvature mode", mode)]
    ev_rows = [(e.index, e.start, e.peak, e.end, e.height, e.crossing) for e in events]
    config = yaml.safe_dump(run.config.resolved(), sort_keys=False) if run.config else "(not recorded)"
    instabilities = (
        _table(("#", "start", "peak", "end", "peak / base loss", "λ₁ > threshold at"), ev_rows)
        if ev_rows
        else "<p>none</p>"
    )
    body = (
        f"<h2>Summary</h2>{_table(('', ''), summary)}"
        f"<h2>Figures</h2>{_figures_html([(p, CAPTIONS.get(n, n)) for n, p in figures.items()])}"
        f"<h2>Instabilities</h2>{instabilities}"
        f"<h2>Config</h2><pre>{html.escape(config)}</pre>"
        f"<h2>Status</h2><pre>{html.escape(json.dumps(status, indent=1))}</pre>"
    )
    return _write(folder / "report.html", _page(f"Run {run.path.name}", body))


def render_sweep(points: Sequence[SweepPoint], runs: Sequence[Run], out: str | Path) -> Path:
    """``report.html`` for a sweep: every point's curves together and a table of outcomes."""
    out = Path(out)
    labels = [",".join(f"{k}={v}" for k, v in p.values.items()) for p in points]
    curves = plots.sweep_curves(list(runs), labels, out / "figures" / "sweep_curves.png")
    rows = []
    for lab, run in zip(labels, runs, strict=True):
        last = run.measurements[-1] if run.measurements else {}
        rows.append(
            (
                lab,
                run.state,
                run.status.get("diverged_step"),
                last.get("train_loss"),
                last.get("test_acc"),
                last.get("lambda1"),
                last.get("threshold"),
                len(find_instabilities(run)) if run.metrics else 0,
                run.path.name,
            )
        )
    header = (
        "point",
        "status",
        "diverged at",
        "final loss",
        "test acc",
        "λ₁",
        "threshold",
        "instabilities",
        "folder",
    )
    body = (
        f"<h2>Points</h2>{_table(header, rows)}"
        f"<h2>Curves</h2>{_figures_html([(curves, 'Loss and λ₁ / threshold of every point.')])}"
    )
    return _write(out / "report.html", _page(f"Sweep {out.name} ({len(points)} points)", body))


def render_experiment(result: ExperimentResult) -> Path:
    """Draw an experiment's figures and write its ``report.html`` and ``claims.json``."""
    folder = result.folder
    drawn = []
    for spec in result.figures:
        drawn.append((draw(spec, folder / "figures"), spec.caption))
    claims = (
        claims_table(result.claims) + f'<p class="meta">{html.escape(INTERVAL_NOTE)}</p>'
        if result.claims
        else "<p>This experiment tests no claim.</p>"
    )
    sens = sensitivity_table(result.claims)
    if sens:
        claims += (
            '<h3>Sensitivity to the instability threshold δ</h3><p class="meta">The claims that '
            "depend on δ, at each δ of the sensitivity set (the default is "
            f"{DEFAULT_DELTA:g}).</p>{sens}"
        )
    tables = "".join(f"<h3>{html.escape(t.title)}</h3>{_table(t.header, t.rows)}" for t in result.tables)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    body = (
        f'<p>{html.escape(result.what)}</p><p class="meta">{html.escape(result.paper)} · variant '
        f"<b>{result.variant}</b> · seeds {', '.join(map(str, result.seeds))} · "
        f"{result.seconds:.0f} s · {len(result.runs)} runs</p>"
        f"<h2>Claims</h2>{claims}<h2>Figures</h2>{_figures_html(drawn)}"
        + (f"<h2>Tables</h2>{tables}" if tables else "")
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + f"<h2>Settings</h2><pre>{html.escape(yaml.safe_dump(result.settings, sort_keys=False))}</pre>"
        + "<h2>Runs</h2><ul>"
        + "".join(f"<li>{html.escape(str(r))}</li>" for r in result.runs)
        + "</ul>"
    )
    doc = {
        "name": result.name,
        "variant": result.variant,
        "seconds": result.seconds,
        "seeds": list(result.seeds),
        "claims": [claim_doc(c) for c in result.claims],
    }
    (folder / "claims.json").write_text(json.dumps(doc, indent=1))
    return _write(folder / "report.html", _page(f"{result.name}: {result.title}", body))
