"""The ``landscope`` command line (typer + rich).

Every command has ``--help``. Bad input exits with code 2 and one line naming the bad value.
"""

from __future__ import annotations

import os
import time
import warnings
from functools import wraps
from typing import TYPE_CHECKING

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from landscope.errors import LandscopeError
from landscope.training.detector import DEFAULT_DELTA

if TYPE_CHECKING:
    from landscope.training import Run

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="landscope: watch the loss landscape while a neural network trains.",
)
console = Console()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    """landscope: watch the loss landscape while a neural network trains."""
    if version:
        from landscope import __version__

        console.print(f"landscope {__version__}")
        raise typer.Exit()


def _user_errors(fn):
    """Turn landscope's own errors into a one-line message and exit code 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LandscopeError as e:
            # escaped: a message naming `landscope[ray]` or a list `[0.1, 0.2]` is not rich markup;
            # soft_wrap: not folded to the terminal's width, so the files it names can be copied
            console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


@app.command()
@_user_errors
def eigs(
    k: int = typer.Option(10, "--k", "-k", help="Number of top Hessian eigenvalues."),
    width: int = typer.Option(32, help="Hidden width of the tanh MLP."),
    depth: int = typer.Option(2, help="Hidden layers of the MLP."),
    steps: int = typer.Option(200, help="Full-batch GD steps before measuring (0: at init)."),
    lr: float = typer.Option(0.1, help="Learning rate of those steps."),
    n_train: int = typer.Option(4000, help="MNIST-1D training samples (the Hessian set)."),
    loss: str = typer.Option("ce", help="Loss: 'ce' (cross-entropy) or 'mse' (½‖f−onehot‖²)."),
    tol: float = typer.Option(1e-6, help="Relative residual tolerance of Lanczos."),
    seed: int = typer.Option(0, help="Seed of the initialisation and the Lanczos start vector."),
    float64: bool = typer.Option(False, "--float64", help="Evaluate the Hessian in float64."),
) -> None:
    """Train a small MNIST-1D MLP with full-batch GD, then print its top-k Hessian eigenvalues."""
    from landscope.curvature import HessianOperator, eigenpairs
    from landscope.data import load_mnist1d
    from landscope.errors import InputError
    from landscope.models import mlp

    if loss not in ("ce", "mse"):
        raise InputError(f"--loss must be 'ce' or 'mse', got {loss!r}")
    if steps < 0 or not lr > 0:
        raise InputError(f"--steps must be ≥ 0 and --lr > 0, got steps={steps}, lr={lr}")
    torch.manual_seed(seed)
    with console.status("generating MNIST-1D"):
        ds = load_mnist1d(n_train=n_train)
    X, y = ds.train
    model = mlp(X.shape[1], 10, width=width, depth=depth)

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if loss == "ce":
            return torch.nn.functional.cross_entropy(out, target)
        onehot = torch.nn.functional.one_hot(target, out.shape[1]).to(out.dtype)
        return 0.5 * ((out - onehot) ** 2).sum(dim=1).mean()

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("training", total=steps, loss="-")
        for _ in range(steps):
            opt.zero_grad()
            value = loss_fn(model(X), y)
            value.backward()
            opt.step()
            bar.update(task, advance=1, loss=f"{value.item():.4f}")
    op = HessianOperator(model, loss_fn, (X, y), dtype=torch.float64 if float64 else None)
    start = time.perf_counter()
    res = eigenpairs(op, k=k, tol=tol, seed=seed, progress=True)
    elapsed = time.perf_counter() - start

    table = Table(
        title=f"Top-{k} Hessian eigenvalues · MLP 40→{'→'.join([str(width)] * depth)}→10"
        f" · {loss} · {n_train} samples · after {steps} GD steps at η={lr:g}"
    )
    table.add_column("i", justify="right")
    table.add_column("λᵢ", justify="right")
    table.add_column("‖Hv−λv‖/|λ₁|", justify="right")
    for i, (lam, r) in enumerate(zip(res.values.tolist(), res.relative_residuals.tolist(), strict=True), 1):
        table.add_row(str(i), f"{lam:.6g}", f"{r:.1e}")
    console.print(table)
    lam1 = res.values[0].item()
    console.print(
        f"dim {op.dim:,} · {res.n_matvecs} Hessian-vector products · {elapsed:.2f} s · "
        f"converged: {res.converged}"
    )
    console.print(
        f"GD stability threshold 2/η = {2 / lr:.4g}; λ₁·η/2 = {lam1 * lr / 2:.3f} "
        f"({'beyond' if lam1 > 2 / lr else 'within'} the stable region)"
    )


@app.command()
@_user_errors
def train(
    config: str = typer.Argument(..., help="Run config (YAML; see configs/ and DESIGN §2)."),
    out: str = typer.Option(
        None, "--out", "-o", help="Run folder (default runs/<config name>); an existing run resumes."
    ),
) -> None:
    """Train the run CONFIG describes, measuring the landscope as it goes; resumes an existing run."""
    from pathlib import Path

    import landscope as ls
    from landscope.training import load_config

    cfg = load_config(config)
    folder = Path(out) if out else Path("runs") / Path(config).stem
    console.print(f"[bold]run folder[/] {folder}")
    run = ls.train(cfg, folder, progress=True)
    _summary(run)


def _summary(run: Run) -> None:
    """A table of how the run ended."""
    meas = run.measurements
    last = meas[-1] if meas else (run.metrics[-1] if run.metrics else {})
    table = Table(title=f"{run.path} · {run.state}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row(
        "status",
        run.state + (f" at step {run.status.get('diverged_step')}" if run.state == "diverged" else ""),
    )
    table.add_row("steps", str(run.metrics[-1]["step"] if run.metrics else 0))
    for key, label in (
        ("train_loss", "train loss"),
        ("test_loss", "test loss"),
        ("test_acc", "test accuracy"),
        ("lambda1", "λ₁"),
        ("threshold", "threshold"),
    ):
        if last.get(key) is not None:
            table.add_row(label, f"{last[key]:.5g}")
    if "clip_count" in run.status:
        table.add_row("clipping fired", str(run.status["clip_count"]))
    console.print(table)
    console.print(f"metrics: {run.path / 'metrics.jsonl'}")


@app.command()
@_user_errors
def analyze(
    runs: list[str] = typer.Argument(..., help="Run folders (written by `landscope train`)."),
    delta: float = typer.Option(
        DEFAULT_DELTA, help="Instability threshold δ: loss > (1+δ) × running minimum."
    ),
    out: str = typer.Option(None, "--out", "-o", help="Figure folder (default RUN/figures)."),
) -> None:
    """Instabilities, flattening and shift of recorded runs, as tables and figures."""
    from pathlib import Path

    import landscope as ls
    from landscope.analysis import find_instabilities, flattening, landscape_shift
    from landscope.errors import InputError
    from landscope.report import plots

    if not delta > 0:
        raise InputError(f"--delta must be positive, got {delta}")
    for path in runs:
        run = ls.load_run(path)
        events = find_instabilities(run, delta)
        table = Table(title=f"{path} · {run.state} · {len(events)} instabilities (δ = {delta:g})")
        for col in (
            "#",
            "start",
            "peak",
            "end",
            "heating",
            "cooling",
            "peak / base loss",
            "λ₁ > threshold at",
        ):
            table.add_column(col, justify="right")
        for ev in events:
            end = "—" if ev.end is None else str(ev.end)
            cooling = "—" if ev.end is None else str(ev.end - ev.peak)
            table.add_row(
                str(ev.index),
                str(ev.start),
                str(ev.peak),
                end,
                str(ev.peak - ev.start),
                cooling,
                f"{ev.height:.2f}",
                "—" if ev.crossing is None else str(ev.crossing),
            )
        console.print(table)
        flat = flattening(run, events)
        console.print(
            f"flattening: λ₁ after instabilities {[round(v, 4) for v in flat.lambda1.tolist()]}; "
            f"Spearman ρ = {flat.rho:.3f}"
            + (f" (p = {flat.p_value:.2g})" if flat.rho == flat.rho else " (fewer than 3 instabilities)")
        )
        try:
            shift = landscape_shift(run, events)
            console.print(
                f"shift: across instabilities {shift.mean_across:.3f} vs stable windows of the "
                f"same length {shift.mean_stable:.3f} ({len(shift.across)} instabilities)"
            )
        except InputError as e:
            console.print(f"shift: not available ({e})")
        folder = Path(out) / Path(path).name if out else Path(path) / "figures"
        figures = plots.run_figures(run, folder, delta)
        console.print(f"figures: {', '.join(str(p) for p in figures.values())}")


@app.command("list")
@_user_errors
def list_cmd(paper: str = typer.Argument(None, help="wang2023 or gilmer2021 (default: all).")) -> None:
    """The registered experiments of `landscope reproduce`."""
    from landscope.experiments import list_experiments

    table = Table(title="Experiments (`landscope reproduce PAPER [NAME] --quick|--smoke`)")
    table.add_column("name", style="bold")
    table.add_column("what it shows")
    for e in list_experiments(paper):
        table.add_row(e.name, e.what + (" [beyond the paper]" if e.beyond_paper else ""))
    console.print(table)


def _reproduce(
    names: list[str],
    variant: str,
    out: str,
    workers: int,
    backend: dict | None = None,
    seeds: int | None = None,
) -> list:
    """Run and render experiments, printing each claims table (``backend``: run_points options)."""
    from landscope.experiments import run_experiment
    from landscope.report.html import interval_text, render_experiment, seeds_text

    results = []
    for name in names:
        console.rule(f"[bold]{name}[/] ({variant})")
        result = run_experiment(
            name,
            variant,
            out,
            workers,
            log=lambda m: console.print(f"[dim]{escape(m)}"),
            seeds=seeds,
            **(backend or {}),
        )
        page = render_experiment(result)
        title = f"{name}: claims over seeds {', '.join(map(str, result.seeds))}"
        table = Table(title=title, show_lines=False)
        for col in ("claim", "measured (first seed)", "criterion", "per seed", "95 % interval", "verdict"):
            table.add_column(col)
        for c in result.claims:
            mark = {"pass": "[green]", "fail": "[red]"}.get(c.verdict, "[yellow]") + c.verdict
            table.add_row(
                escape(c.text),
                escape(c.measured),
                escape(c.criterion),
                seeds_text(c.seeds),
                escape(interval_text(c.interval)),
                mark,
            )
        console.print(table)
        console.print(f"{result.seconds:.0f} s · report: {page}")
        results.append((result, page))
    return results


def _variant(quick: bool, smoke: bool, full: bool) -> str:
    from landscope.errors import InputError

    if quick + smoke + full > 1:
        raise InputError("choose at most one of --quick, --smoke, --full")
    return "smoke" if smoke else "full" if full else "quick"


@app.command()
@_user_errors
def reproduce(
    paper: str = typer.Argument(..., help="wang2023 or gilmer2021."),
    name: str = typer.Argument(None, help="One experiment (e.g. lr_sweep); default: all of the paper."),
    quick: bool = typer.Option(
        False, "--quick", help="MNIST-1D / synthetic variant, ≤ 15 min on 2 CPU cores (the default)."
    ),
    smoke: bool = typer.Option(False, "--smoke", help="Seconds: checks the pipeline, not the science."),
    full: bool = typer.Option(False, "--full", help="The papers' data sets (for a GPU or a cluster)."),
    out: str = typer.Option("results", "--out", "-o", help="Output folder (runs are shared and resumed)."),
    workers: int = typer.Option(1, help="Runs at once: local processes, or the CPUs of a local Ray."),
    backend: str = typer.Option("local", help="local (a process pool) or ray (one Ray task a run)."),
    address: str = typer.Option(None, help="Ray only: a cluster to join (auto, or ray://host:10001)."),
    gpus_per_point: float = typer.Option(0.0, help="Ray only: GPUs each run reserves."),
    seeds: int = typer.Option(
        None,
        help="Seeds per experiment (initialisation and data order); default "
        "1 for --smoke, 3 for --quick, 5 for --full.",
    ),
) -> None:
    """Run a paper's experiments (or one) and write an HTML report with a claims table for each.

    Each claim is measured at every seed and reported with its per-seed values, a 95 % interval
    and a verdict: pass, fail, or inconclusive when the interval straddles the claimed boundary.
    """
    from landscope.errors import InputError
    from landscope.experiments import PAPERS, list_experiments

    if paper not in PAPERS or paper == "landscope":
        raise InputError(f"unknown paper {paper!r}; choose wang2023 or gilmer2021")
    _check_backend(backend, workers, address, gpus_per_point)
    names = [e.name for e in list_experiments(paper)]
    if name is not None:
        full_name = name if name.startswith(paper + ".") else f"{paper}.{name}"
        if full_name not in names:
            raise InputError(
                f"unknown experiment {name!r} of {paper}; `landscope list {paper}` shows: "
                f"{', '.join(n.split('.', 1)[1] for n in names)}"
            )
        names = [full_name]
    variant = _variant(quick, smoke, full)
    if seeds is not None:
        from landscope.experiments.registry import check_seeds

        check_seeds(seeds)
    if backend == "ray":  # one Ray for every experiment's runs, not one per batch of runs
        from landscope.experiments.sweep import ray_session

        with ray_session(workers, address):
            _reproduce(
                names, variant, out, workers, _backend_options(backend, address, gpus_per_point), seeds=seeds
            )
    else:
        _reproduce(names, variant, out, workers, seeds=seeds)


@app.command()
@_user_errors
def demo(
    out: str = typer.Option("results", "--out", "-o", help="Output folder."),
    smoke: bool = typer.Option(False, "--smoke", help="A few seconds (for tests)."),
    seeds: int = typer.Option(None, help="Seeds (default 3; 1 with --smoke)."),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), help="Runs at once (local processes)."),
) -> None:
    """An MNIST-1D run at the edge of stability over 3 seeds, ending with the path of its HTML report."""
    from landscope.errors import InputError

    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    ((_, page),) = _reproduce(["landscope.demo"], "smoke" if smoke else "quick", out, workers, seeds=seeds)
    console.print(f"[bold green]open {page}")


@app.command()
@_user_errors
def sweep(
    config: str = typer.Argument(..., help="Sweep config: a run config plus `sweep: {key: \\[values]}`."),
    out: str = typer.Option(None, "--out", "-o", help="Sweep folder (default sweeps/<config name>)."),
    workers: int = typer.Option(1, help="Points at once: local processes, or the CPUs of a local Ray."),
    backend: str = typer.Option(
        "local", help='local (a process pool) or ray (one Ray task a point; pip install "landscope\\[ray]").'
    ),
    address: str = typer.Option(
        None,
        help="Ray only: a cluster to join (auto, or ray://host:10001); "
        "default: start a local Ray with --workers CPUs.",
    ),
    gpus_per_point: float = typer.Option(
        0.0, help="Ray only: GPUs each point reserves (1: one point a GPU)."
    ),
) -> None:
    """Run (or resume) every point of a sweep, each in its own run folder, and write a report."""
    from pathlib import Path

    from landscope.experiments.sweep import run_points, sweep_points
    from landscope.report.html import render_sweep

    _check_backend(backend, workers, address, gpus_per_point)
    folder = Path(out) if out else Path("sweeps") / Path(config).stem
    points = sweep_points(config, folder)
    console.print(f"{len(points)} points → {folder}" + (" (ray)" if backend == "ray" else ""))
    runs = run_points(
        points,
        workers,
        on_done=lambda p, r: console.print(f"  {p.folder.name}: {r.state}"),
        **_backend_options(backend, address, gpus_per_point),
    )
    console.print(f"report: {render_sweep(points, runs, folder)}")


def _check_backend(backend: str, workers: int, address: str | None, gpus_per_point: float) -> None:
    """One-line errors for the sweep options shared by `sweep` and `reproduce`."""
    from landscope.errors import InputError
    from landscope.experiments.sweep import BACKENDS

    if backend not in BACKENDS:
        raise InputError(f"unknown --backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if backend != "ray" and (address is not None or gpus_per_point):
        raise InputError("--address and --gpus-per-point need --backend ray")
    if gpus_per_point < 0:
        raise InputError(f"--gpus-per-point must be ≥ 0, got {gpus_per_point}")


def _backend_options(backend: str, address: str | None, gpus_per_point: float) -> dict:
    if backend == "local":
        return {}
    return {"backend": backend, "address": address, "gpus_per_point": gpus_per_point}


@app.command()
@_user_errors
def report(run: str = typer.Argument(..., help="Run folder.")) -> None:
    """Write RUN/report.html: figures, instabilities, config and status of one run."""
    import landscope as ls
    from landscope.report.html import render_run

    console.print(f"report: {render_run(ls.load_run(run))}")


@app.command("lr-find")
@_user_errors
def lr_find(
    config: str = typer.Argument(..., help="Run config (YAML): data, model, loss, optimizer, batch size."),
    plot: str = typer.Option(
        None, "--plot", help="PNG of λ1 vs steps and the probes (default runs/<config name>_lr_find.png)."
    ),
    rule: str = typer.Option(
        "catapult",
        help="'catapult' (short probe runs measure the catapult factor) "
        "or 'curvature' (a fixed measured factor, no probes).",
    ),
    probe_steps: int = typer.Option(
        None, help="Steps of each catapult probe (default: 1/8 of the config's train.steps, 10 to 100)."
    ),
    range_test: bool = typer.Option(
        False,
        "--range-test",
        help="Also run the classic LR range test (one 100-step run): its "
        "suggestions are printed and the plot draws the curvature "
        "bound over its loss-vs-lr curve.",
    ),
) -> None:
    """Predict the largest stable learning rate of CONFIG's model from its early curvature."""
    from pathlib import Path

    from landscope.monitor import find_max_stable_lr
    from landscope.training import load_config
    from landscope.training.run import build_run, resolve_device

    cfg = load_config(config)
    device = resolve_device(cfg.device)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    with console.status("building the model and data"):
        model, loss_fn, ds = build_run(cfg)
    model = model.to(device=device, dtype=dtype)
    X, y = (
        t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
        for t in (ds.X_train, ds.y_train)
    )
    opt = cfg.optimizer
    with console.status("measuring the early curvature and probing"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the catapult factor", category=RuntimeWarning)
        res = find_max_stable_lr(
            model,
            loss_fn,
            (X, y),
            optimizer=opt.name,
            momentum=opt.momentum if opt.name in ("momentum", "nesterov") else 0.0,
            batch_size=cfg.train.batch_size,
            rule=rule,
            probe_steps=probe_steps,
            steps=cfg.train.steps,
            betas=opt.betas,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
            range_test=range_test,
            seed=cfg.seed,
        )
    console.print(res.table(title=f"{config} · largest stable learning rate"))
    if res.range_test is not None:
        sug = ", ".join(f"{k} {v:.4g}" for k, v in res.range_test.suggestions.items() if v is not None)
        console.print(f"LR range test suggests: {sug or 'nothing (the curve was too short)'}")
    for note in res.notes:
        console.print(f"[yellow]note:[/] {note}")
    verdict = "within" if opt.lr <= res.lr else "[red]above[/]"
    console.print(f"the config's η = {opt.lr:g} is {verdict} the predicted limit {res.lr:.4g}")
    path = res.plot(plot or Path("runs") / f"{Path(config).stem}_lr_find.png")
    console.print(f"plot: {path}")


def main() -> None:
    """Entry point of the ``landscope`` script."""
    app()


if __name__ == "__main__":
    main()
