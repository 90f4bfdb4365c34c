"""The registry of named experiments (DESIGN §7) and the context they run in.

An experiment is a function ``fn(ctx) -> ExperimentResult`` registered under a dotted name
(``wang2023.lr_sweep``). It asks the :class:`Context` for runs; the context puts every run in a
folder named by a hash of its config under ``<out>/runs``, so experiments that need the same run
share it, and a re-run (or a resumed one) trains only what is missing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from landscope.checks import positive_int
from landscope.errors import InputError
from landscope.experiments.results import ExperimentResult, combine_seeds
from landscope.experiments.sweep import SweepPoint, run_points
from landscope.training import Run, load_run, parse_config

VARIANTS = ("smoke", "quick", "full")
PAPERS = {
    "wang2023": "Wang & Roberts (2023), The instabilities of large learning rate training: "
    "a loss landscape view",
    "gilmer2021": "Gilmer et al. (2021), A loss curvature perspective on training instability "
    "in deep learning",
    "landscope": "landscope",
}
_MODULES = (
    "landscope.experiments.demo",
    "landscope.experiments.wang2023",
    "landscope.experiments.gilmer2021",
)


@dataclass(frozen=True)
class Experiment:
    """A named experiment: what it shows and the function that runs it."""

    name: str
    title: str
    what: str
    fn: Callable[[Context], ExperimentResult]
    beyond_paper: bool = False

    @property
    def paper(self) -> str:
        """``wang2023``, ``gilmer2021`` or ``landscope``."""
        return self.name.split(".")[0]


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(
    name: str, title: str, what: str, beyond_paper: bool = False
) -> Callable[[Callable[[Context], ExperimentResult]], Callable[[Context], ExperimentResult]]:
    """Register the decorated function as experiment ``name``."""

    def register(fn: Callable[[Context], ExperimentResult]) -> Callable[[Context], ExperimentResult]:
        EXPERIMENTS[name] = Experiment(name, title, what, fn, beyond_paper)
        return fn

    return register


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def list_experiments(paper: str | None = None) -> list[Experiment]:
    """The registered experiments (of one paper), in registration order."""
    _load()
    if paper is not None and paper not in PAPERS:
        raise InputError(f"unknown paper {paper!r}; choose one of {', '.join(PAPERS)}")
    return [e for e in EXPERIMENTS.values() if paper is None or e.paper == paper]


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name`` (``paper.experiment``)."""
    _load()
    if name not in EXPERIMENTS:
        raise InputError(
            f"unknown experiment {name!r}; `landscope list` shows them: {', '.join(EXPERIMENTS)}"
        )
    return EXPERIMENTS[name]


def config_hash(config: dict[str, Any]) -> str:
    """A short hash of a resolved config (what defines a run)."""
    resolved = parse_config(config).without_versions()
    return hashlib.sha1(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:10]


DEFAULT_SEEDS = {"smoke": 1, "quick": 3, "full": 5}


def check_seeds(seeds: object) -> int:
    """A seed count, or one :class:`InputError` naming the value."""
    return positive_int("seeds", seeds, what="how many seeds each experiment runs")


class Context:
    """Where an experiment runs: its variant, folders, worker count, seeds and run cache.

    The experiment function runs once per seed with :attr:`seed` set; its configs say ``seed: 0``
    and :meth:`train_many` offsets that by the current seed (initialisation and data order). The
    first call trains the runs of every seed at once, so the pool is kept busy across seeds; the
    calls for later seeds find them done.
    """

    def __init__(
        self,
        variant: str,
        out: str | Path,
        workers: int = 1,
        log: Callable[[str], None] | None = None,
        seeds: Sequence[int] = (0,),
        **backend: Any,
    ) -> None:
        if variant not in VARIANTS:
            raise InputError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.root, self.workers = variant, Path(out), workers
        self.backend = backend  # run_points' options: backend, address, gpus_per_point
        self.log = log or (lambda _msg: None)
        self.folder = self.root  # set per experiment by run_experiment
        self.seeds = tuple(seeds)
        self.seed = self.seeds[0]

    def run_folder(self, config: dict[str, Any], label: str = "run") -> Path:
        """The shared folder of the run a config describes."""
        slug = "".join(c if c.isalnum() or c in "._=-" else "_" for c in label)[:60]
        return self.root / "runs" / f"{slug}-{config_hash(config)}"

    def train(self, config: dict[str, Any], label: str = "run") -> Run:
        """Train (or reuse) one run."""
        return self.train_many([config], [label])[0]

    def seeded(self, config: dict[str, Any], seed: int) -> dict[str, Any]:
        """``config`` at ``seed``: its own seed offset by it."""
        return {**config, "seed": int(config.get("seed", 0)) + seed}

    def train_many(self, configs: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[Run]:
        """Train (or reuse) several runs at the current seed, in parallel when there are workers.

        The same configs at every other seed of the context are trained in the same batch.
        """
        points, mine = [], []
        for s in self.seeds:
            for c, lab in zip(configs, labels, strict=True):
                cfg = self.seeded(c, s)
                point = SweepPoint({}, cfg, self.run_folder(cfg, lab if s == 0 else f"{lab}_s{s}"))
                points.append(point)
                if s == self.seed:
                    mine.append(point)
        todo = [p for p in points if not _finished(p.folder)]
        if todo:
            self.log(
                f"{len(todo)} run(s) to train ({len(self.seeds)} seed(s)): "
                f"{', '.join(p.folder.name.rsplit('-', 1)[0] for p in todo[:8])}"
                + (" …" if len(todo) > 8 else "")
            )

            def done(p: SweepPoint, r: Run) -> None:
                self.log(f"  done {p.folder.name}: {r.state}")

            run_points(todo, self.workers, on_done=done, **self.backend)
        return [load_run(p.folder) for p in mine]


def _finished(folder: Path) -> bool:
    """Whether a run folder holds a finished run (completed or diverged)."""
    status = folder / "status.json"
    try:
        return json.loads(status.read_text()).get("status") in ("completed", "diverged")
    except (OSError, ValueError):
        return False


def run_experiment(
    name: str,
    variant: str = "quick",
    out: str | Path = "results",
    workers: int = 1,
    log: Callable[[str], None] | None = None,
    seeds: int | None = None,
    **backend: Any,
) -> ExperimentResult:
    """Run experiment ``name`` in ``variant`` under ``out``; returns its result (not yet rendered).

    ``seeds``: how many seeds (0 … seeds − 1: initialisation and data order) every claim is
    measured at; default :data:`DEFAULT_SEEDS` of the variant (1 smoke, 3 quick, 5 full).
    ``backend`` holds the keyword options of :func:`~landscope.experiments.sweep.run_points`
    (``backend="ray"``, ``address``, ``gpus_per_point``) for the experiment's runs.
    """
    exp = get_experiment(name)
    n = DEFAULT_SEEDS[variant] if seeds is None and variant in DEFAULT_SEEDS else seeds
    ctx = Context(variant, out, workers, log, seeds=range(check_seeds(n)), **backend)
    ctx.folder = Path(out) / name
    ctx.folder.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    per_seed = []
    for s in ctx.seeds:
        ctx.seed = s
        per_seed.append(exp.fn(ctx))
    result = combine_seeds(per_seed, ctx.seeds)
    return replace(
        result,
        name=exp.name,
        title=exp.title,
        paper=PAPERS[exp.paper],
        variant=variant,
        folder=ctx.folder,
        what=exp.what,
        seconds=time.perf_counter() - tic,
    )
