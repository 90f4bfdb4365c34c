"""``find_max_stable_lr``: the largest learning rate that survives, from the early curvature.

[G] (Gilmer et al. 2021) find that whether training diverges is decided in its first steps, by
the curvature there, and that the best η sits near the largest non-divergent one. The finder
therefore (1) measures λ1 at initialisation and along the first steps at a safe η, (2) inverts the
optimiser's stability threshold at that early curvature (η_thr = 2/λ1 for SGD), and (3) corrects
for how far above η_thr training survives: above the threshold the loss first grows along the top
eigenvector, and training survives when the curvature falls fast enough for the loss to come back
(the catapult of Lewkowycz et al. 2020). How far that reaches depends on the model; see
:func:`find_max_stable_lr` for the factors measured on the benchmark models.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscope.curvature import EigenTracker, HessianOperator
from landscope.curvature.modes import model_mode
from landscope.errors import InputError, LandscopeError
from landscope.monitor.sinks import json_safe
from landscope.train import MeasureConfig, OptimizerSpec, Trainer, stability_threshold
from landscope.train.measure import hessian_subset

OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov")
RULES = ("catapult", "curvature")

# η*/η_thr = η*·λ̂1/a (a = threshold × η: 2 for SGD) measured on the four benchmark models of
# benchmarks/lr_finder.py (MNIST-1D, 1,000 samples, MSE, full-batch GD, 200 steps, η* the largest
# non-divergent η of a 2^(1/4) grid): tanh MLP 1.70, BN ReLU MLP 3.40, ReLU CNN 3.59, BN ReLU CNN
# 3.75. rule="curvature" uses the smallest (safe on all four; 2.2× too low on the CNN with BN).
CATAPULT_FACTOR = 1.70
START_FACTOR = 2.0        # first catapult probe, in units of η_thr
MAX_FACTOR = 64.0         # the search gives up above / below these
MIN_FACTOR = 1.0 / 64.0
BISECTIONS = 2            # resolution of the catapult factor: 2^(1/4) ≈ 1.19


@dataclass(frozen=True)
class Probe:
    """One short run from the initial parameters at ``lr`` (``factor`` × the threshold η)."""

    lr: float
    factor: float
    survived: bool        # no divergence, and the loss ended below its initial value
    steps: int            # steps run (fewer when it diverged)
    loss_ratio: float     # final / initial loss on the Hessian set (inf when it diverged)


@dataclass(frozen=True)
class LRFinderResult:
    """What :func:`find_max_stable_lr` found; ``lr`` is the prediction.

    ``lambda1_trajectory[i]`` is λ1 after ``lambda1_steps[i]`` steps at ``early_lr`` (half the
    threshold η of λ1 at init); ``lambda1_early`` its last value, whose threshold η is
    ``threshold_lr``; ``lr = catapult_factor × threshold_lr``. ``threshold_constant`` is the
    optimiser's threshold × η (2 for SGD, 2 + 2β heavy-ball, (2 + 2β)/(1 + 2β) Nesterov).
    """

    lr: float
    rule: str
    optimizer: str
    momentum: float
    lambda1_init: float
    lambda1_steps: tuple[int, ...]
    lambda1_trajectory: tuple[float, ...]
    lambda1_early: float
    early_lr: float
    threshold_constant: float
    threshold_lr: float
    catapult_factor: float
    probes: tuple[Probe, ...]
    probe_steps: int
    n_matvecs: int
    n_train_steps: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        d = asdict(self)
        d["probes"] = [{k: json_safe(v) for k, v in asdict(p).items()} for p in self.probes]
        return {k: (json_safe(v) if k != "probes" else v) for k, v in d.items()}

    def table(self, title: str = "Largest stable learning rate") -> Any:
        """A rich ``Table`` of the estimate and how it was reached."""
        from rich.table import Table
        t = Table(title=title, show_header=False)
        t.add_column("", style="bold")
        t.add_column("", justify="right")
        a = self.threshold_constant
        t.add_row("optimizer", self.optimizer + (f" (momentum {self.momentum:g})" if self.momentum else ""))
        t.add_row("λ1 at init", f"{self.lambda1_init:.4g}")
        t.add_row(f"λ1 after {self.lambda1_steps[-1]} steps at η={self.early_lr:.3g}",
                  f"{self.lambda1_early:.4g}")
        t.add_row(f"threshold η = {a:.3g}/λ1", f"{self.threshold_lr:.4g}")
        t.add_row("catapult factor", f"{self.catapult_factor:.3g}")
        t.add_row("[green]predicted largest stable η", f"[green]{self.lr:.4g}")
        if self.probes:
            ok = ", ".join(f"{p.lr:.3g}{'✓' if p.survived else '✗'}"
                           for p in sorted(self.probes, key=lambda p: p.lr))
            t.add_row(f"probes ({self.probe_steps} steps)", ok)
        t.add_row("rule", self.rule)
        t.add_row("cost", f"{self.n_matvecs} Hessian-vector products, {self.n_train_steps} training steps, "
                          f"{self.seconds:.2f} s")
        return t

    def plot(self, path: str | Path) -> Path:
        """PNG: λ1 over the first steps with the predicted limit, and the probes' outcomes."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, 2 if self.probes else 1, figsize=(10 if self.probes else 5.5, 3.8),
                                 squeeze=False)
        ax = axes[0, 0]
        a = self.threshold_constant
        ax.plot(self.lambda1_steps, self.lambda1_trajectory, "o-", color="k",
                label=f"λ1 at η={self.early_lr:.3g}")
        ax.axhline(a / self.threshold_lr, color="tab:orange", ls="--",
                   label=f"threshold at η_thr={self.threshold_lr:.3g}")
        ax.axhline(a / self.lr, color="tab:red", ls="-",
                   label=f"threshold at predicted η={self.lr:.3g}")
        ax.set_xlabel("training step")
        ax.set_ylabel("top Hessian eigenvalue λ1")
        ax.set_title("early curvature")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        if self.probes:
            ax = axes[0, 1]
            for survived, colour, label in ((True, "tab:green", "survived"), (False, "tab:red", "failed")):
                ps = [p for p in self.probes if p.survived == survived]
                if ps:
                    ax.scatter([p.lr for p in ps], [min(p.loss_ratio, 1e3) for p in ps], color=colour,
                               label=label, zorder=3)
            ax.axvline(self.threshold_lr, color="tab:orange", ls="--", label="η_thr")
            ax.axvline(self.lr, color="tab:red", label="predicted η")
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("learning rate η")
            ax.set_ylabel(f"loss after {self.probe_steps} steps / initial (capped at 1e3)")
            ax.set_title("catapult probes")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _check(model: object, loss_fn: object, data: object, optimizer: object, momentum: object,
           batch_size: object, rule: object, early_steps: object, probe_steps: object) -> tuple[str, float]:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise InputError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        raise InputError(f"data must be a tuple (X, y) of tensors (the training set), "
                         f"got {type(data).__name__}")
    if len(data[0]) != len(data[1]) or len(data[0]) == 0:
        raise InputError(f"data: X has {len(data[0])} samples and y {len(data[1])}; they need the same "
                         f"positive number")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r} (Adam's preconditioned "
                         f"threshold depends on its state along the run: use the SharpnessMonitor)")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise InputError(f"momentum must be in [0, 1), got {momentum!r}")
    if optimizer == "nesterov" and momentum == 0:
        raise InputError("optimizer 'nesterov' needs momentum > 0, got 0")
    n = len(data[0])
    if batch_size is not None and not (isinstance(batch_size, int) and not isinstance(batch_size, bool)
                                       and 1 <= batch_size <= n):
        raise InputError(f"batch_size must be None (full batch) or an integer in [1, {n}], "
                         f"got {batch_size!r}")
    if rule not in RULES:
        raise InputError(f"rule must be one of {RULES}, got {rule!r}")
    for key, v in (("early_steps", early_steps), ("probe_steps", probe_steps)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{key} must be a positive integer, got {v!r}")
    kind = "momentum" if optimizer in ("gd", "sgd") and momentum > 0 else optimizer
    if kind == "momentum" and momentum == 0:
        kind = "sgd"
    return ("sgd" if kind == "gd" else kind), float(momentum)


@torch.no_grad()
def _train_mode_loss(model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor,
                     batch_size: int | None) -> float:
    """Mean loss of the function being trained (BN on batches of the training size, dropout off)."""
    with model_mode(model, "train"):
        step = batch_size or len(X)
        total = 0.0
        for s in range(0, len(X), step):
            total += float(loss_fn(model(X[s:s + step]), y[s:s + step])) * len(X[s:s + step])
        return total / len(X)


def find_max_stable_lr(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                       data: tuple[torch.Tensor, torch.Tensor], optimizer: str = "sgd", momentum: float = 0.0,
                       *, batch_size: int | None = None, rule: str = "catapult", early_steps: int = 5,
                       probe_steps: int = 10, hessian_samples: int | None = 256, tol: float = 1e-3,
                       diverge_factor: float = 1000.0, seed: int = 0) -> LRFinderResult:
    """Predict the largest learning rate at which training ``model`` on ``data`` does not diverge.

    Works on a copy: ``model``, its gradients, BN statistics and the global RNG are untouched.

    1. **Early curvature** ([G]): λ1 of the training loss (on ``hessian_samples`` seeded samples,
       BatchNorm with batch statistics) at initialisation and after each of ``early_steps`` steps
       at half the threshold η of λ1(init); its last value λ̂1 absorbs the fast initial transient
       (λ1 of the BatchNorm CNN of the benchmark falls from 8.3 to 5.9 in one step).
    2. **Threshold inversion**: η_thr = a/λ̂1 with a the optimiser's threshold × η (2 for SGD,
       2 + 2β heavy-ball, (2 + 2β)/(1 + 2β) Nesterov).
    3. **Catapult correction**: training survives above η_thr when the curvature falls fast
       enough after the loss starts to grow. How far is model-specific; measured on the four
       benchmark models (benchmarks/lr_finder.py: MNIST-1D, MSE, full-batch GD, η* the largest η
       not diverging in 200 steps on a 2^(1/4) grid), η*/η_thr = 1.70 (tanh MLP), 3.40 (ReLU MLP
       with BatchNorm), 3.59 (ReLU CNN), 3.75 (ReLU CNN with BatchNorm): a 2.2× spread, so no
       single factor is within 1.5× on all of them. ``rule="catapult"`` (default) therefore
       measures the factor: short runs ("probes", ``probe_steps`` steps from the initial
       parameters) at η = f·η_thr, f = 2, then doubling or halving, then two bisections
       (resolution 2^(1/4)); a probe survives when it does not diverge and its loss ends below
       the initial loss (the catapult has come back). The prediction is the largest surviving η.
       On the benchmark models divergence showed within 8 steps, and 10-step probes agreed with
       the 200-step runs: predictions 0.94–1.07× η* (four held-out models: 0.92–1.10×), at
       1.0–3.3 % of the sweep's CPU time. ``rule="curvature"`` skips the probes and uses the smallest
       measured factor, :data:`CATAPULT_FACTOR` = 1.70 (cheaper, safe on those models, up to
       2.2× low).

    Args:
        model: the model at its initialisation (copied, never modified).
        loss_fn: mean-reduced ``loss_fn(model(X), y)``.
        data: the training set ``(X, y)``.
        optimizer: ``"sgd"``/``"gd"`` (momentum > 0 makes it heavy-ball), ``"momentum"``,
            ``"nesterov"``. (Adam's preconditioned threshold depends on its state along the run;
            use the :class:`~landscope.monitor.SharpnessMonitor` for it.)
        momentum: β, PyTorch's form.
        batch_size: ``None`` for full-batch GD, else the minibatch size of the probes (seeded
            batches, as the :class:`~landscope.train.Trainer` draws them).
        rule: ``"catapult"`` or ``"curvature"`` (see 3.).
        early_steps: steps of the early phase (λ1 measured after each).
        probe_steps: steps of each catapult probe.
        hessian_samples: size of the seeded subset the Hessian is measured on (``None``: all).
        tol: relative residual of the eigensolver.
        diverge_factor: a run diverges when its loss exceeds this × the initial loss (or is NaN).
        seed: seeds the subset, the batches, dropout and the eigensolver.
    """
    kind, beta = _check(model, loss_fn, data, optimizer, momentum, batch_size, rule, early_steps, probe_steps)
    tic = time.perf_counter()

    def spec(lr: float) -> OptimizerSpec:
        return OptimizerSpec(name=kind, lr=lr, momentum=beta if kind in ("momentum", "nesterov") else 0.9)
    a = float(stability_threshold(spec(1.0)))
    X, y = data
    device = next(model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        work = copy.deepcopy(model)
        for p in work.parameters():
            p.grad = None
        work.train()
        theta0 = copy.deepcopy(work.state_dict())
        measure = MeasureConfig(every=1, k=1, tol=tol, hessian_samples=hessian_samples, model_mode="train",
                                test=False, save_vectors=False)
        # λ1 at init sets the early η; a cold solve (the early run's measurements warm-start from it)
        hX, hy = hessian_subset(X, y, hessian_samples, seed)
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in work.modules())
        op = HessianOperator(work, loss_fn, (hX, hy), model_mode="train",
                             chunk_size=batch_size if has_bn and batch_size else None)
        tracker = EigenTracker(k=1, tol=tol, seed=seed)
        res0 = tracker.update(op)
        lam0 = float(res0.values[0])
        n_matvecs, n_steps = res0.n_matvecs, 0
        del op
        if not lam0 > 0:
            raise LandscopeError(f"λ1 at initialisation is {lam0:.4g}: no positive curvature whose threshold "
                                 f"could be inverted")
        early_lr = 0.5 * a / lam0
        trainer = Trainer(work, loss_fn, (X, y), optimizer=spec(early_lr), steps=early_steps,
                          batch_size=batch_size, measure=measure, diverge_factor=diverge_factor, seed=seed)
        # the early run's first measurement (step 0) starts from the converged λ1(init) vector
        trainer.measurer.load_state_dict({"tracker": tracker.state_dict(), "tracked_preconditioned": False})
        run = trainer.fit()
        rows = [r for r in run.metrics if r.get("lambda1") is not None]
        n_matvecs += sum(r.get("n_matvecs", 0) for r in rows)
        n_steps += run.step
        steps = tuple(int(r["step"]) for r in rows)
        traj = tuple(float(r["lambda1"]) for r in rows)
        lam_early = traj[-1] if traj else lam0
        if not (math.isfinite(lam_early) and lam_early > 0):
            raise LandscopeError(f"λ1 after {steps[-1] if steps else 0} early steps is {lam_early:.4g}")
        thr_lr = a / lam_early
        probes: list[Probe] = []

        def survives(f: float) -> bool:
            nonlocal n_steps
            work.load_state_dict(theta0)
            loss0 = _train_mode_loss(work, loss_fn, hX, hy, batch_size)
            r = Trainer(work, loss_fn, (X, y), optimizer=spec(f * thr_lr), steps=probe_steps,
                        batch_size=batch_size, diverge_factor=diverge_factor, seed=seed).fit()
            n_steps += r.step
            ratio = math.inf
            if r.status == "completed":
                ratio = _train_mode_loss(work, loss_fn, hX, hy, batch_size) / loss0
                ratio = ratio if math.isfinite(ratio) else math.inf
            ok = r.status == "completed" and ratio < 1.0
            probes.append(Probe(lr=f * thr_lr, factor=f, survived=ok, steps=r.step, loss_ratio=ratio))
            return ok

        if rule == "curvature":
            factor = CATAPULT_FACTOR
            rule_text = (f"curvature: η = {CATAPULT_FACTOR} × {a:.3g}/λ1 after {early_steps} steps "
                         f"(a measured catapult factor)")
        else:
            lo, hi = _search(survives)
            for _ in range(BISECTIONS if hi > lo else 0):
                mid = math.sqrt(lo * hi)
                lo, hi = (mid, hi) if survives(mid) else (lo, mid)
            factor = lo
            rule_text = (f"catapult: η = f × {a:.3g}/λ1 after {early_steps} steps, f the largest that "
                         f"survived {probe_steps}-step probes (loss back below its initial value)")
    return LRFinderResult(lr=factor * thr_lr, rule=rule_text, optimizer=kind,
                          momentum=beta if kind != "sgd" else 0.0, lambda1_init=lam0, lambda1_steps=steps,
                          lambda1_trajectory=traj, lambda1_early=lam_early, early_lr=early_lr,
                          threshold_constant=a, threshold_lr=thr_lr, catapult_factor=factor,
                          probes=tuple(probes), probe_steps=probe_steps, n_matvecs=n_matvecs,
                          n_train_steps=n_steps, seconds=time.perf_counter() - tic)


def _search(survives: Callable[[float], bool]) -> tuple[float, float]:
    """Bracket the largest surviving factor: ``(lo, hi)`` with ``lo`` surviving and ``hi`` not."""
    f = START_FACTOR
    if survives(f):
        while f < MAX_FACTOR:
            if not survives(2 * f):
                return f, 2 * f
            f *= 2
        return f, f  # survives everything tried: report the largest
    while f > MIN_FACTOR:
        f /= 2
        if survives(f):
            return f, 2 * f
    raise LandscopeError(f"no probe survived, down to {MIN_FACTOR:g} × the threshold η: training diverges "
                         f"from this initialisation at any learning rate tried")
