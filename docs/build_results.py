"""Build docs/RESULTS.md from the quick variants' outputs (results/<experiment>/).

    .venv/bin/landscope demo
    .venv/bin/landscope reproduce wang2023 --quick --workers 2
    .venv/bin/landscope reproduce gilmer2021 --quick --workers 2
    .venv/bin/python docs/build_results.py [--results results]

Copies each experiment's figures to docs/results/<experiment>/ and writes its claims as measured:
per-seed values, the 95 % interval, the three-way verdict, the verdict before issue 13 (one seed,
δ = 0.1, every-20 measurements; docs/verdicts_before.json) and the δ-sensitivity table. The
plain-language summaries and the per-claim "what changed" sentences in docs/verdicts.json are
written by hand after reading the numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from landscope.experiments import list_experiments

DOCS = Path(__file__).parent


def _json(name: str) -> dict:
    path = DOCS / name
    return json.loads(path.read_text()) if path.is_file() else {}


VERDICTS = _json("verdicts.json")  # {experiment: {"summary": ..., "claims": {text: sentence}}}
BEFORE = _json("verdicts_before.json")  # {experiment: [{"text", "measured", "criterion", "verdict"}]}
COLD = _json("timings.json")  # {experiment: seconds from cold}: claims.json times a re-render

# claims whose wording changed with issue 13: new text → the text they had before
RENAMED = {
    "Landscape flattening: λ₁ after each instability falls with its index": (
        "Landscape flattening at large η: λ₁ after each instability falls",
        "λ₁ after instabilities falls with the instability index (ρ < 0)",
    ),
    "Landscape shift: the top subspace turns more across instabilities than over stable windows": (
        "Landscape shift: the top subspace turns more across instabilities than over stable windows",
        "Shift across instabilities ≫ shift over stable windows",
    ),
    "The shift across instabilities grows with η": ("The shift grows with η",),
    "… and ends in one (final λ₁, after sharpening at the decayed η)": (
        "A longer large-η phase ends in a flatter region",
    ),
    "Lower curvature early in training allows a larger stable η (across init/norm choices)": (
        "Lower curvature at initialisation allows a larger stable η (across init/norm choices)",
    ),
    "The best η lies within one grid step of the largest η that trains": (
        "The best η lies within one grid step of the largest non-divergent η",
    ),
    "Similarity to the low-η baseline falls with η (cosine of θ − θ₀)": (
        "Similarity to the low-η baseline falls with η",
        "Similarity to the low-η baseline falls with η (cosine of θ − θ₀)",
    ),
}


def _cell(x: object) -> str:
    return str(x).replace("|", "\\|")


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _interval(ci: list[float] | None) -> str:
    return "—" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def _bold(verdict: str) -> str:
    return f"**{verdict}**" if verdict in ("fail", "inconclusive") else verdict


def _before(name: str, text: str) -> str:
    old = BEFORE.get(name, [])
    for candidate in (text, *RENAMED.get(text, ())):
        for c in old:
            if c["text"] == candidate:
                return c["verdict"]
    return "new"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results"))
    args = ap.parse_args()
    lines = [
        "# Results of the quick variants",
        "",
        "What `landscope reproduce … --quick` measured on this project's 2-core CPU machine (MNIST-1D "
        "or synthetic data; the papers used Fashion-MNIST and CIFAR-10). Every experiment ran at three "
        "seeds (initialisation and data order). Each claim is a statistic fixed in the code before the "
        "runs (`src/landscope/experiments/claims.py` holds the shared ones) with the side of it the "
        "paper's claim puts it on. The 95 % interval is Student's t over the seeds (mean ± "
        "t₀.₉₇₅,₂·s/√3); the verdict is **pass** when the interval lies on the claimed side, **fail** "
        "when it lies on the other side, **inconclusive** when it straddles the boundary (or when fewer "
        "than two seeds could be measured). *Before* is "
        "the verdict of the same claim before issue 13 (one seed, δ = 0.1, λ₁ every 20 steps). "
        "Instabilities are found at δ = 0.02 (docs/instabilities.md) and measured at every step from "
        "one before to one after (`measure.around_instabilities`); claims that depend on δ are also "
        "given at δ ∈ {0.01, 0.02, 0.05, 0.1}. Regenerate with the commands in `docs/build_results.py`.",
        "",
    ]
    total, tally = 0.0, {}
    for exp in list_experiments():
        folder = args.results / exp.name
        claims_file = folder / "claims.json"
        lines += [f"## {exp.name}: {exp.title}", "", exp.what, ""]
        if not claims_file.is_file():
            lines += ["*Not run yet.*", ""]
            continue
        doc = json.loads(claims_file.read_text())
        seconds = COLD.get(exp.name, doc["seconds"])
        total += seconds
        seeds = doc.get("seeds", [0])
        lines += [
            f"Quick variant: {seconds / 60:.1f} min from cold (2 workers), seeds "
            f"{', '.join(map(str, seeds))}.",
            "",
        ]
        notes = VERDICTS.get(exp.name, {})
        if isinstance(notes, str):
            notes = {"summary": notes}
        if notes.get("summary"):
            lines += [f"**Verdict.** {notes['summary']}", ""]
        if doc["claims"]:
            lines += [
                "| claim | criterion | per seed | 95 % interval | verdict | before |",
                "|---|---|---|---|---|---|",
            ]
            for c in doc["claims"]:
                verdict = c.get("verdict", "n/a")
                tally[verdict] = tally.get(verdict, 0) + 1
                cells = [
                    _cell(c["text"]),
                    _cell(c["criterion"]),
                    ", ".join(_num(v) for v in c.get("seeds", [c.get("value")])),
                    _interval(c.get("interval")),
                    _bold(verdict),
                    _before(exp.name, c["text"]),
                ]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
            lines += ["Measured (first seed):", ""]
            lines += [f"- {c['text']}: {c['measured']}" for c in doc["claims"]]
            lines.append("")
            changed = notes.get("claims", {})
            if changed:
                lines += ["What changed and why:", ""]
                lines += [f"- *{text}*: {sentence}" for text, sentence in changed.items()]
                lines.append("")
            sens = [c for c in doc["claims"] if c.get("sensitivity")]
            if sens:
                deltas = [row["delta"] for row in sens[0]["sensitivity"]]
                lines += [
                    "Sensitivity to δ (verdict and interval at each δ):",
                    "",
                    "| claim | " + " | ".join(f"δ = {d:g}" for d in deltas) + " |",
                    "|---|" + "---|" * len(deltas),
                ]
                for c in sens:
                    cells = [f"{row['verdict']} {_interval(row['interval'])}" for row in c["sensitivity"]]
                    lines.append(f"| {_cell(c['text'])} | " + " | ".join(cells) + " |")
                lines.append("")
        target = DOCS / "results" / exp.name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for png in sorted((folder / "figures").glob("*.png")):
            shutil.copy(png, target / png.name)
            lines += [f"![{exp.name} {png.stem}](results/{exp.name}/{png.name})", ""]
    lines += [
        f"Total time of the quick variants: {total / 60:.0f} min. Verdicts: "
        + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
        + ".",
        "",
    ]
    (DOCS / "RESULTS.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
