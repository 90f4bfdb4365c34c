"""Sensitivity of ``find_instabilities`` to δ, scored against δ-free reference spikes.

A *spike* (fixed by the issue, ``ls.analysis.loss_spikes``): a step whose loss is a local maximum
and at least 2 % above the lowest loss of the 30 steps before it. For each δ of the grid, the
instabilities ``find_instabilities(run, delta=δ)`` returns are scored with
``ls.analysis.detection_scores``: recall = fraction of spikes inside some instability's
[start, end], precision = fraction of instabilities holding a spike (pooled: every spike and every
instability of the study set counts once).

Runs: MNIST-1D (1000 train samples), MLP width 32 depth 2, full-batch GD, 2000 steps, no curvature
measured (``measure: {every: 2000, k: 0}``: the losses are all the study needs). Study set:
MSE/tanh at η ∈ {0.2, 0.25, 0.3} × seeds {0, 1}, and CE/ReLU at η ∈ {0.5, 1.0} (seed 0), picked
from the CE probes {0.1, 0.25, 0.5, 1.0, 2.0, 4.0} (all reported) as two η whose loss spikes during
the descent and that train to a low loss. Held-out set (never used for the choice): MSE/tanh,
seeds {2, 3} × η ∈ {0.2, 0.3}.

Selection rule, fixed before any score was computed: the largest δ of the grid whose pooled recall
and pooled precision on the study set are both ≥ 0.9; if none, the δ with the highest pooled F1.

Run folders are cached under --out (a re-run reuses them); about 1–2 min on 2 CPU cores with one
torch thread. Writes results/instability_detection.{json,md,png} (with --quick: a tiny version,
600 steps and three runs, written under --out/results instead).

    .venv/bin/python benchmarks/instability_detection.py [--out /tmp/instability_study] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name, markdown_table

import landscope as ls
from landscope.analysis import DetectionScore, detection_scores, find_instabilities, loss_spikes
from landscope.training import Run

RESULTS = Path(__file__).parent / "results"
DELTAS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
CURRENT_DEFAULT = 0.1
RISE, WINDOW = 0.02, 30
RULE = (
    "the largest δ in the grid whose pooled recall and pooled precision are both ≥ 0.9 on the study "
    "set; if none, the δ with the highest pooled F1"
)
THRESHOLD = 0.9
MSE_LRS, MSE_SEEDS = (0.2, 0.25, 0.3), (0, 1)
CE_PROBE_LRS, CE_LRS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0), (0.5, 1.0)
HELD_OUT_LRS, HELD_OUT_SEEDS = (0.2, 0.3), (2, 3)


def config(loss: str, activation: str, lr: float, seed: int, steps: int) -> dict:
    """``base_config("quick")`` (MNIST-1D 1000/500, MLP 32×2, GD) with no curvature measured."""
    return {
        "seed": seed,
        "data": {"name": "mnist1d", "n_train": 1000, "n_test": 500},
        "model": {"name": "mlp", "width": 32, "depth": 2, "activation": activation},
        "loss": loss,
        "optimizer": {"name": "gd", "lr": lr},
        "train": {"steps": steps},
        "measure": {"every": steps, "k": 0, "test": False},
    }


def run_name(loss: str, activation: str, lr: float, seed: int, steps: int) -> str:
    return f"{loss}_{activation}_lr{lr:g}_s{seed}_n{steps}"


def train(spec: tuple, out: Path, steps: int) -> tuple[str, Run, float]:
    name = run_name(*spec, steps)
    tic = time.perf_counter()
    run = ls.train(config(*spec, steps), out / name, progress=False)
    return name, run, time.perf_counter() - tic


def coverage(events: list, n_steps: int) -> float:
    """Fraction of the run's steps inside some instability (a detector that never ends scores 1)."""
    covered = np.zeros(n_steps + 1, dtype=bool)
    for e in events:
        covered[e.start : (n_steps if e.end is None else e.end) + 1] = True
    return float(covered.mean())


def missed(run: Run, spikes: np.ndarray, events: list, delta: float) -> list[dict]:
    """The spikes no instability holds, each with the detector's bar at that step.

    ``ref`` is the detector's running minimum at the spike (reset to the loss at the last
    instability's end); ``reset_in_window``: that end lies within the spike's 30-step window, so
    the detector compares against a higher minimum than the spike's definition does.
    """
    steps, loss = run.series("train_loss")
    out = []
    for t in spikes:
        if any(e.start <= t <= (math.inf if e.end is None else e.end) for e in events):
            continue
        i = int(np.searchsorted(steps, t))
        ends = [int(np.searchsorted(steps, e.end)) for e in events if e.end is not None and e.end < t]
        lo = ends[-1] if ends else 0
        ref = float(np.min(loss[lo : i + 1]))
        win = float(np.min(loss[max(0, i - WINDOW) : i]))
        out.append(
            {
                "step": int(t),
                "loss": float(loss[i]),
                "window_min": win,
                "rise": float(loss[i] / win - 1),
                "detector_min": ref,
                "rise_over_detector_min": float(loss[i] / ref - 1),
                "steps_since_last_end": int(t - steps[lo]) if ends else None,
                "reset_in_window": bool(ends) and i - lo <= WINDOW,
                "delta": delta,
            }
        )
    return out


def rises(run: Run, spikes: np.ndarray) -> np.ndarray:
    """Each spike's height: its loss over the minimum of the 30 losses before it, minus 1."""
    steps, loss = run.series("train_loss")
    idx = np.searchsorted(steps, spikes)
    return np.array([loss[i] / np.min(loss[max(0, i - WINDOW) : i]) - 1 for i in idx])


def score_runs(runs: dict[str, Run], spikes: dict[str, np.ndarray]) -> dict:
    """Per δ: the pooled score and each run's (plus how much of each run the events cover)."""
    out = {}
    for delta in DELTAS:
        per_run, cov = {}, {}
        for name, run in runs.items():
            events = find_instabilities(run, delta=delta)
            per_run[name] = detection_scores(events, spikes[name])
            cov[name] = coverage(events, run.config.train.steps)
        out[delta] = {"pooled": DetectionScore.pooled(per_run.values()), "runs": per_run, "coverage": cov}
    return out


def choose(scores: dict) -> tuple[float, str]:
    """The rule: largest δ with pooled recall and precision ≥ 0.9; else the highest pooled F1."""
    ok = [
        d
        for d in DELTAS
        if scores[d]["pooled"].recall >= THRESHOLD and scores[d]["pooled"].precision >= THRESHOLD
    ]
    if ok:
        return max(ok), "largest δ with pooled recall and precision ≥ 0.9"
    f1 = {d: scores[d]["pooled"].f1 for d in DELTAS}
    best = max(DELTAS, key=lambda d: -1 if math.isnan(f1[d]) else f1[d])
    return best, "no δ reaches 0.9 on both: highest F1"


def as_dict(s: DetectionScore) -> dict:
    return {
        "recall": s.recall,
        "precision": s.precision,
        "f1": s.f1,
        "n_spikes": s.n_spikes,
        "n_events": s.n_events,
        "n_caught": s.n_caught,
        "n_hit": s.n_hit,
    }


def fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("/tmp/instability_study"),
        help="folder of the cached run folders (default /tmp/instability_study)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny version (600 steps, 3 runs, no CE probes), results under --out/results",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    tic = time.perf_counter()
    steps = 600 if args.quick else 2000
    study_specs = [("mse", "tanh", lr, s) for s in MSE_SEEDS for lr in MSE_LRS] + [
        ("ce", "relu", lr, 0) for lr in CE_LRS
    ]
    held_specs = [("mse", "tanh", lr, s) for s in HELD_OUT_SEEDS for lr in HELD_OUT_LRS]
    probe_specs = [("ce", "relu", lr, 0) for lr in CE_PROBE_LRS]
    if args.quick:
        study_specs, held_specs, probe_specs = (
            [("mse", "tanh", 0.3, 0), ("ce", "relu", 1.0, 0)],
            [("mse", "tanh", 0.3, 2)],
            [],
        )
    results = args.out / "results" if args.quick else RESULTS
    args.out.mkdir(parents=True, exist_ok=True)

    def load(specs: list[tuple]) -> tuple[dict, dict, dict]:
        runs, spikes, info = {}, {}, {}
        for spec in specs:
            name, run, wall = train(spec, args.out, steps)
            runs[name], spikes[name] = run, loss_spikes(run, rise=RISE, window=WINDOW)
            _, loss = run.series("train_loss")
            info[name] = {
                "loss": spec[0],
                "activation": spec[1],
                "lr": spec[2],
                "seed": spec[3],
                "state": run.state,
                "final_loss": float(loss[-1]),
                "initial_loss": float(loss[0]),
                "n_spikes": int(len(spikes[name])),
                "spikes": spikes[name].tolist(),
                "rises": rises(run, spikes[name]).tolist(),
                "wall_s": wall,
                "train_seconds": run.status.get("train_seconds", math.nan),
                "cached": wall < 0.5 and run.status.get("train_seconds", 0) > 0.5,
            }
            print(
                f"{name:26s} {run.state:9s} loss {loss[0]:.3g} → {loss[-1]:.3g}  "
                f"{len(spikes[name]):3d} spikes  ({wall:.1f} s)",
                flush=True,
            )
        return runs, spikes, info

    print("CE/ReLU probes (to pick the two CE η of the study set):")
    _, _, probe_info = load(probe_specs)
    print("study set:")
    runs, spikes, study_info = load(study_specs)
    print("held-out set:")
    held_runs, held_spikes, held_info = load(held_specs)

    scores = score_runs(runs, spikes)
    chosen, why = choose(scores)
    held = score_runs(held_runs, held_spikes)
    print(f"\n{'δ':>6s}  {'recall':>6s}  {'precision':>9s}  {'F1':>5s}  events  spikes caught")
    for d in DELTAS:
        p = scores[d]["pooled"]
        print(
            f"{d:6g}  {p.recall:6.3f}  {p.precision:9.3f}  {p.f1:5.3f}  {p.n_events:6d}  "
            f"{p.n_caught}/{p.n_spikes}"
        )
    h = held[chosen]["pooled"]
    print(
        f"\nchosen δ = {chosen:g} ({why})"
        + ("  [--quick: a pipeline check, not the study]" if args.quick else "")
    )
    print(
        f"held-out at δ = {chosen:g}: recall {h.recall:.3f}, precision {h.precision:.3f} "
        f"({h.n_caught}/{h.n_spikes} spikes, {h.n_hit}/{h.n_events} instabilities)"
    )

    # robustness of the choice (reported, not used): drop each study run in turn
    loo = {}
    for name in runs:
        rest = {k: v for k, v in runs.items() if k != name}
        loo[name] = choose(score_runs(rest, {k: spikes[k] for k in rest}))[0]
    miss = {
        name: missed(run, spikes[name], find_instabilities(run, delta=chosen), chosen)
        for name, run in runs.items()
    }
    miss_default = {
        name: missed(run, spikes[name], find_instabilities(run, delta=CURRENT_DEFAULT), CURRENT_DEFAULT)
        for name, run in runs.items()
    }
    held_miss = {
        name: missed(run, held_spikes[name], find_instabilities(run, delta=chosen), chosen)
        for name, run in held_runs.items()
    }
    wall = time.perf_counter() - tic
    every = {**probe_info, **study_info, **held_info}  # the probes share two runs with the study set

    def block(sc: dict) -> dict:
        return {
            str(d): {
                "pooled": as_dict(sc[d]["pooled"]),
                "runs": {
                    n: {**as_dict(s), "coverage": sc[d]["coverage"][n]} for n, s in sc[d]["runs"].items()
                },
            }
            for d in DELTAS
        }

    meta = {
        "deltas": list(DELTAS),
        "rise": RISE,
        "window": WINDOW,
        "rule": RULE,
        "threshold": THRESHOLD,
        "current_default": CURRENT_DEFAULT,
        "steps": steps,
        "quick": args.quick,
        "config_template": config("LOSS", "ACTIVATION", "LR", "SEED", steps),
        "threads": 1,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "wall_s": wall,
        "out": str(args.out),
        "n_runs": len(every),
        "train_seconds_all_runs": sum(i["train_seconds"] for i in every.values()),
    }
    doc = {
        "meta": meta,
        "chosen_delta": chosen,
        "why": why,
        "ce_probes": probe_info,
        "study_runs": study_info,
        "held_out_runs": held_info,
        "study": block(scores),
        "held_out": block(held),
        "leave_one_out_choice": loo,
        "missed_at_chosen": miss,
        "missed_at_current_default": miss_default,
        "held_out_missed_at_chosen": held_miss,
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / "instability_detection.json").write_text(json.dumps(doc, indent=1))
    (results / "instability_detection.md").write_text(markdown(doc, scores, held))
    plot(results / "instability_detection.png", scores, held, chosen, runs, spikes)
    print(f"wrote {results / 'instability_detection.md'} (+ .json, .png) in {wall:.0f} s")


def markdown(doc: dict, scores: dict, held: dict) -> str:
    meta, chosen = doc["meta"], doc["chosen_delta"]
    all_rises = np.array([r for info in doc["study_runs"].values() for r in info["rises"]])
    lines = [
        f"# Choosing δ of `find_instabilities`: recall and precision against reference spikes "
        f"(MNIST-1D, full-batch GD, {meta['steps']} steps)",
        "",
        *(
            ["**--quick**: a pipeline check on three 600-step runs, not the study; its δ means nothing.", ""]
            if meta["quick"]
            else []
        ),
        f"A **spike**: a local maximum of the training loss at least {100 * meta['rise']:g} % above the "
        f"lowest loss of the {meta['window']} steps before it (`ls.analysis.loss_spikes`). **Recall**: "
        "fraction of spikes inside some detected instability's [start, end]; **precision**: fraction "
        "of instabilities holding at least one spike (`ls.analysis.detection_scores`); pooled over the "
        "runs of a set. *Coverage*: mean fraction of a run's steps inside an instability (a detector "
        "that never ends would score recall 1 and precision 1 with coverage 1).",
        "",
        f"**Rule** (fixed before looking): {meta['rule']}.",
        "",
        "## Study set, pooled",
        "",
    ]
    rows = []
    for d in meta["deltas"]:
        p = scores[d]["pooled"]
        cov = np.mean(list(scores[d]["coverage"].values()))
        taller = np.mean(all_rises > d) if len(all_rises) else math.nan
        rows.append(
            [
                f"{d:g}"
                + (" (chosen)" if d == chosen else "")
                + (" (current)" if d == meta["current_default"] else ""),
                fmt(p.recall),
                fmt(p.precision),
                fmt(p.f1),
                f"{p.n_caught}/{p.n_spikes}",
                f"{p.n_hit}/{p.n_events}",
                f"{cov:.2f}",
                fmt(taller),
            ]
        )
    lines += markdown_table(
        [
            "δ",
            "recall",
            "precision",
            "F1",
            "spikes caught",
            "instabilities with a spike",
            "coverage",
            "spikes > δ tall",
        ],
        rows,
    )
    q = np.quantile(all_rises, [0.1, 0.25, 0.5, 0.75, 0.9]) if len(all_rises) else [math.nan] * 5
    lines += [
        "*Spikes > δ tall*: fraction of the study spikes whose rise over their window minimum exceeds "
        "δ. Recall follows it: an instability starts only once the loss is δ above the detector's "
        "running minimum, so a spike less than δ tall is caught only inside an instability a taller "
        "rise started (or if the loss was lower still earlier since the last instability ended). "
        "Spike rises: "
        + ", ".join(
            f"{k} {100 * v:.1f} %" for k, v in zip(("p10", "p25", "median", "p75", "p90"), q, strict=True)
        )
        + ".",
        "",
    ]
    lines += [
        f"**Chosen δ = {chosen:g}** ({doc['why']}).",
        "",
        "## Study set, per run (recall / precision)",
        "",
    ]
    names = list(doc["study_runs"])
    rows = [
        [
            n,
            str(doc["study_runs"][n]["n_spikes"]),
            *(
                f"{fmt(scores[d]['runs'][n].recall)} / {fmt(scores[d]['runs'][n].precision)}"
                for d in meta["deltas"]
            ),
        ]
        for n in names
    ]
    lines += markdown_table(["run", "spikes", *(f"δ={d:g}" for d in meta["deltas"])], rows)
    lines += ["## Held-out set (not used for the choice)", ""]
    rows = []
    for d in meta["deltas"]:
        p = held[d]["pooled"]
        rows.append(
            [
                f"{d:g}" + (" (chosen)" if d == chosen else ""),
                fmt(p.recall),
                fmt(p.precision),
                f"{p.n_caught}/{p.n_spikes}",
                f"{p.n_hit}/{p.n_events}",
            ]
        )
    lines += markdown_table(["δ", "recall", "precision", "spikes caught", "instabilities with a spike"], rows)
    rows = [
        [
            n,
            str(doc["held_out_runs"][n]["n_spikes"]),
            f"{fmt(held[chosen]['runs'][n].recall)} / {fmt(held[chosen]['runs'][n].precision)}",
            f"{fmt(held[meta['current_default']]['runs'][n].recall)} / "
            f"{fmt(held[meta['current_default']]['runs'][n].precision)}",
        ]
        for n in doc["held_out_runs"]
    ]
    lines += markdown_table(
        ["held-out run", "spikes", f"δ={chosen:g} R / P", f"δ={meta['current_default']:g} R / P"], rows
    )
    missed = [m | {"run": n} for n, ms in doc["missed_at_chosen"].items() for m in ms]
    lines += [f"## Spikes missed at δ = {chosen:g} (study set)", ""]
    if missed:
        reset = sum(m["reset_in_window"] for m in missed)
        lines += [
            f"{len(missed)} spikes; {reset} of them come within {meta['window']} steps after an "
            "instability ended, where the detector's running minimum restarts at the loss of the "
            "end step (just under (1+δ)× the old minimum) while the spike's window still reaches "
            "back to the lower losses before that instability.",
            "",
        ]
        rows = [
            [
                m["run"],
                str(m["step"]),
                f"{100 * m['rise']:.1f} %",
                f"{100 * m['rise_over_detector_min']:.1f} %",
                "–" if m["steps_since_last_end"] is None else str(m["steps_since_last_end"]),
            ]
            for m in missed
        ]
        lines += markdown_table(
            ["run", "step", "rise over window min", "rise over detector's min", "steps since last end"], rows
        )
    else:
        lines += ["None.", ""]
    loo = doc["leave_one_out_choice"]
    lines += [
        "## Robustness (reported, not used for the choice)",
        "",
        "δ the rule picks with one study run left out: "
        + ", ".join(f"{n}: {d:g}" for n, d in loo.items())
        + ".",
        "",
    ]
    if doc["ce_probes"]:
        lines += ["## CE/ReLU probes (seed 0) from which the study set's CE η were picked", ""]
        rows = [
            [
                f"{p['lr']:g}",
                p["state"],
                f"{p['initial_loss']:.3g} → {p['final_loss']:.3g}",
                str(p["n_spikes"]),
                ", ".join(str(s) for s in p["spikes"][:6]) + (" …" if p["n_spikes"] > 6 else ""),
            ]
            for p in doc["ce_probes"].values()
        ]
        lines += markdown_table(["η", "state", "loss", "spikes", "first spikes"], rows)
    lines += [
        f"Runs: MNIST-1D 1000 train samples, MLP width 32 depth 2, full-batch GD, "
        f"{meta['steps']} steps, no curvature measured; {meta['threads']} torch thread, "
        f"torch {meta['torch']}, {meta['cpu']}; "
        f"training the {meta['n_runs']} runs took {meta['train_seconds_all_runs']:.0f} s of training "
        f"loop in all (cached runs are "
        f"reused: this invocation took {meta['wall_s']:.0f} s).",
        "",
    ]
    return "\n".join(lines)


def plot(path: Path, scores: dict, held: dict, chosen: float, runs: dict, spikes: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.4]})
    d = np.array(DELTAS)
    for name in runs:
        ax.plot(d, [scores[x]["runs"][name].recall for x in DELTAS], color="C0", alpha=0.18, lw=0.8)
        ax.plot(d, [scores[x]["runs"][name].precision for x in DELTAS], color="C1", alpha=0.18, lw=0.8)
    ax.plot(d, [scores[x]["pooled"].recall for x in DELTAS], "o-", color="C0", label="recall (study, pooled)")
    ax.plot(
        d,
        [scores[x]["pooled"].precision for x in DELTAS],
        "s-",
        color="C1",
        label="precision (study, pooled)",
    )
    ax.plot(
        d,
        [held[x]["pooled"].recall for x in DELTAS],
        "o--",
        color="C0",
        mfc="none",
        label="recall (held-out)",
    )
    ax.plot(
        d,
        [held[x]["pooled"].precision for x in DELTAS],
        "s--",
        color="C1",
        mfc="none",
        label="precision (held-out)",
    )
    ax.axhline(THRESHOLD, color="grey", lw=0.8, ls=":")
    ax.axvline(chosen, color="k", lw=0.8, label=f"chosen δ = {chosen:g}")
    ax.axvline(CURRENT_DEFAULT, color="r", lw=0.8, ls="--", label=f"current default {CURRENT_DEFAULT:g}")
    ax.set_xscale("log")
    ax.set_xlabel("δ")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title("find_instabilities vs reference spikes (thin: per run)")
    ax.legend(fontsize=7, loc="lower left")
    # an example run: the spikes, and the instabilities at the chosen δ and at the current default
    name = max(runs, key=lambda n: len(spikes[n]) if n.startswith("mse") else -1)
    steps, loss = runs[name].series("train_loss")
    ax2.plot(steps, loss, lw=0.8, color="k")
    sp = spikes[name]
    ax2.plot(sp, loss[np.searchsorted(steps, sp)], "v", color="C3", ms=4, label="spikes (reference)")
    lo, hi = np.nanmin(loss), np.nanmax(loss)
    for delta, color, y in ((chosen, "C0", 0.06), (CURRENT_DEFAULT, "C1", 0.0)):
        for k, e in enumerate(find_instabilities(runs[name], delta=delta)):
            end = steps[-1] if e.end is None else e.end
            ax2.axvspan(
                e.start,
                end + 1,
                ymin=y,
                ymax=y + 0.05,
                color=color,
                alpha=0.8,
                label=f"instabilities, δ = {delta:g}" if k == 0 else None,
            )
    ax2.set_yscale("log")
    ax2.set_ylim(lo / 1.3, hi)
    ax2.set_xlabel("step")
    ax2.set_ylabel("training loss")
    ax2.set_title(name)
    ax2.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
