"""Build docs/RESULTS.md from the quick variants' outputs (results/<experiment>/).

    .venv/bin/landscope reproduce wang2023 --quick --workers 2
    .venv/bin/landscope reproduce gilmer2021 --quick --workers 2
    .venv/bin/python docs/build_results.py [--results results]

Copies each experiment's figures to docs/results/<experiment>/ and writes its claims table as
measured; the plain-language verdicts below are written by hand after reading the numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from landscope.experiments import list_experiments
from landscope.experiments.results import verdict

DOCS = Path(__file__).parent

VERDICTS = json.loads((DOCS / "verdicts.json").read_text()) if (DOCS / "verdicts.json").is_file() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results"))
    args = ap.parse_args()
    lines = ["# Results of the quick variants", "",
             "What `landscope reproduce … --quick` measured on this project's 2-core CPU machine "
             "(MNIST-1D or synthetic data; the papers used Fashion-MNIST and CIFAR-10). Each claim's "
             "criterion was fixed in the code before the runs; pass/fail is as it came out. Regenerate "
             "with the commands in `docs/build_results.py`.", ""]
    total = 0.0
    for exp in list_experiments():
        folder = args.results / exp.name
        claims_file = folder / "claims.json"
        lines += [f"## {exp.name}: {exp.title}", "", exp.what, ""]
        if not claims_file.is_file():
            lines += ["*Not run yet.*", ""]
            continue
        doc = json.loads(claims_file.read_text())
        total += doc["seconds"]
        lines += [f"Quick variant: {doc['seconds'] / 60:.1f} min.", ""]
        if exp.name in VERDICTS:
            lines += [f"**Verdict.** {VERDICTS[exp.name]}", ""]
        if doc["claims"]:
            lines += ["| claim | measured | criterion | result |", "|---|---|---|---|"]
            for c in doc["claims"]:
                result = verdict(c["passed"], c["criterion"])
                result = "**fail**" if result == "fail" else result
                cells = [str(c[k]).replace("|", "\\|") for k in ("text", "measured", "criterion")]
                lines.append(f"| {' | '.join(cells)} | {result} |")
            lines.append("")
        target = DOCS / "results" / exp.name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for png in sorted((folder / "figures").glob("*.png")):
            shutil.copy(png, target / png.name)
            lines += [f"![{exp.name} {png.stem}](results/{exp.name}/{png.name})", ""]
    lines += [f"Total time of the quick variants: {total / 60:.0f} min.", ""]
    (DOCS / "RESULTS.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
