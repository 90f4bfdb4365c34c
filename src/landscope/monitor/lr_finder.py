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
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from landscope.checks import positive_int
from landscope.curvature import EigenTracker, HessianOperator, PreconditionedOperator
from landscope.curvature.batch_loss import make_batch_loss
from landscope.curvature.operators import adam_preconditioner
from landscope.errors import InputError, LandscopeError
from landscope.monitor.range_test import RangeTestResult, apply_lr, lr_range_test
from landscope.monitor.records import json_safe
from landscope.monitor.short_runs import (
    OPTIMIZERS,
    Batches,
    at_chance,
    chance_ratio,
    mean_loss,
    optimizer_choice,
    outputs_collapsed,
    train_steps,
    working_copy,
)

__all__ = ["OPTIMIZERS", "RULES", "find_max_stable_lr", "LRFinderResult", "Probe"]
RULES = ("catapult", "curvature")

# η*/η_thr = η*·λ̂1/a (a = threshold × η: 2 for SGD) measured on the four benchmark models of
# benchmarks/lr_finder.py (MNIST-1D, 1,000 samples, MSE, full-batch GD, 200 steps, η* the largest
# non-divergent η of a 2^(1/4) grid): tanh MLP 1.70, BN ReLU MLP 3.40, ReLU CNN 3.59, BN ReLU CNN
# 3.75. rule="curvature" uses the smallest (safe on all four; 2.2× too low on the CNN with BN).
CATAPULT_FACTOR = 1.70
START_FACTOR = 2.0  # first catapult probe, in units of η_thr
MAX_FACTOR = 1024.0  # the search gives up above / below these; wide, because the
MIN_FACTOR = 1.0 / 64.0  # early preconditioned sharpness of RMSprop (whose v has no bias
#                           correction) puts η_thr 10³× below what trains (benchmarks/lr_finder.py)
BISECTIONS = 2  # resolution of the catapult factor: 2^(1/4) ≈ 1.19
CLEARLY_BELOW = 0.9  # a probe trains when its loss ends at most this × the initial loss


@dataclass(frozen=True)
class Probe:
    """One short run from the initial parameters at ``lr`` (``factor`` × the threshold η)."""

    lr: float
    factor: float
    survived: bool  # no divergence, loss ≤ 0.9 × initial, network alive and not at chance
    steps: int  # steps run (fewer when it diverged)
    loss_ratio: float  # final / initial loss on the Hessian set (inf when it diverged)
    dead: bool = False  # the outputs no longer depended on the inputs
    at_chance: bool = False  # no better than its mean output (a stunned network)


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
    preconditioned: bool = False  # λ1 is the preconditioned sharpness (Adam, RMSprop)
    notes: tuple[str, ...] = ()  # where the model did not fit the finder's assumptions
    range_test: RangeTestResult | None = None  # a curve to draw the bound over (plot)

    @property
    def suggestion(self) -> float:
        """The learning rate to use: the prediction ``lr`` (the name LR finders use)."""
        return self.lr

    @property
    def history(self) -> dict[str, list]:
        """How the prediction was reached: the early λ1 and every probe, in order."""
        return {
            "lambda1_steps": list(self.lambda1_steps),
            "lambda1": list(self.lambda1_trajectory),
            "probe_lr": [p.lr for p in self.probes],
            "probe_loss_ratio": [p.loss_ratio for p in self.probes],
            "probe_survived": [p.survived for p in self.probes],
        }

    def apply(self, optimizer: torch.optim.Optimizer, fraction: float = 1.0) -> float:
        """Set every parameter group's learning rate to ``fraction`` × the prediction."""
        return apply_lr(optimizer, fraction * self.lr)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        d = asdict(self)
        d["probes"] = [{k: json_safe(v) for k, v in asdict(p).items()} for p in self.probes]
        d["range_test"] = self.range_test.as_dict() if self.range_test is not None else None
        return {k: (json_safe(v) if k not in ("probes", "range_test") else v) for k, v in d.items()}

    def table(self, title: str = "Largest stable learning rate") -> Any:
        """A rich ``Table`` of the estimate and how it was reached."""
        from rich.table import Table

        t = Table(title=title, show_header=False)
        t.add_column("", style="bold")
        t.add_column("", justify="right")
        a = self.threshold_constant
        t.add_row("optimizer", self.optimizer + (f" (momentum {self.momentum:g})" if self.momentum else ""))
        t.add_row("λ1 at init", f"{self.lambda1_init:.4g}")
        t.add_row(
            f"λ1 after {self.lambda1_steps[-1]} steps at η={self.early_lr:.3g}", f"{self.lambda1_early:.4g}"
        )
        t.add_row(f"threshold η = {a:.3g}/λ1", f"{self.threshold_lr:.4g}")
        t.add_row("catapult factor", f"{self.catapult_factor:.3g}")
        t.add_row("[green]predicted largest stable η", f"[green]{self.lr:.4g}")
        if self.probes:
            ok = ", ".join(
                f"{p.lr:.3g}{'✓' if p.survived else '✗'}" for p in sorted(self.probes, key=lambda p: p.lr)
            )
            t.add_row(f"probes ({self.probe_steps} steps)", ok)
        t.add_row("rule", self.rule)
        t.add_row(
            "cost",
            f"{self.n_matvecs} Hessian-vector products, {self.n_train_steps} training steps, "
            f"{self.seconds:.2f} s",
        )
        return t

    def plot(self, path: str | Path) -> Path:
        """PNG: λ1 over the first steps with the predicted limit, and the probes' outcomes."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        second = bool(self.probes) or self.range_test is not None
        fig, axes = plt.subplots(1, 2 if second else 1, figsize=(10 if second else 5.5, 3.8), squeeze=False)
        ax = axes[0, 0]
        a = self.threshold_constant
        ax.plot(
            self.lambda1_steps, self.lambda1_trajectory, "o-", color="k", label=f"λ1 at η={self.early_lr:.3g}"
        )
        ax.axhline(
            a / self.threshold_lr,
            color="tab:orange",
            ls="--",
            label=f"threshold at η_thr={self.threshold_lr:.3g}",
        )
        ax.axhline(a / self.lr, color="tab:red", ls="-", label=f"threshold at predicted η={self.lr:.3g}")
        ax.set_xlabel("training step")
        ax.set_ylabel("top Hessian eigenvalue λ1")
        ax.set_title("early curvature")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        if second:
            ax = axes[0, 1]
            rt = self.range_test
            if rt is not None and rt.smoothed and rt.smoothed[0] > 0:
                # the loss-vs-lr curve of the range test, as a ratio to its first value
                ax.plot(
                    rt.lrs,
                    [v / rt.smoothed[0] for v in rt.smoothed],
                    color="0.4",
                    label="range test (smoothed loss / first)",
                )
                for name, lr in rt.suggestions.items():
                    if lr is not None:
                        ax.axvline(lr, color="tab:purple", ls=":", lw=0.9, label=f"range {name}")
            for survived, colour, label in ((True, "tab:green", "survived"), (False, "tab:red", "failed")):
                ps = [p for p in self.probes if p.survived == survived]
                if ps:
                    ax.scatter(
                        [p.lr for p in ps],
                        [min(p.loss_ratio, 1e3) for p in ps],
                        color=colour,
                        label=label,
                        zorder=3,
                    )
            ax.axvline(self.threshold_lr, color="tab:orange", ls="--", label="η_thr")
            ax.axvline(self.lr, color="tab:red", label="predicted η")
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("learning rate η")
            ax.set_ylabel(f"loss after {self.probe_steps} steps / initial (capped at 1e3)")
            ax.set_title(
                "probes and the curvature bound"
                if rt is None
                else "the curvature bound over the loss-vs-lr curve"
            )
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _check(
    model: object, rule: object, early_steps: object, probe_steps: object, steps: object, warmup_steps: object
) -> None:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if rule not in RULES:
        raise InputError(f"rule must be one of {RULES}, got {rule!r}")
    positive_int("early_steps", early_steps)
    positive_int("warmup_steps", warmup_steps)
    for key, v in (("probe_steps", probe_steps), ("steps", steps)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise InputError(f"{key} must be None or a positive integer, got {v!r}")


def default_probe_steps(steps: int | None) -> int:
    """Probe length for a planned run of ``steps``: 10, or 1/8 of the run, 10 to 100 steps.

    Divergence shows within 8 steps on full-batch GD, but a network that a large step stuns dies
    later: on the digits ReLU MLP of ``benchmarks/lr_workloads.py`` at twice the largest η that
    trains, the loss is still below its initial value after 15 steps and at chance after 30–50.
    The probe follows the run it stands for.
    """
    return 10 if steps is None else int(min(max(10, steps // 8), 100))


def find_max_stable_lr(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    data: object = None,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    *,
    batch_size: int | None = None,
    batch_loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    batch_weight: Callable[[Any], float] | None = None,
    steps: int | None = None,
    rule: str = "catapult",
    early_steps: int = 5,
    probe_steps: int | None = None,
    warmup_steps: int = 10,
    hessian_samples: int | Literal["auto"] | None = "auto",
    tol: float = 1e-3,
    diverge_factor: float = 1000.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    range_test: bool = False,
    seed: int = 0,
) -> LRFinderResult:
    """Predict the largest learning rate at which training ``model`` on ``data`` does not diverge.

    Works on a copy: ``model``, its gradients, BN statistics and the global RNG are untouched.

    1. **Early curvature** ([G]): λ1 of the training loss (on ``hessian_samples`` seeded samples,
       or the first batches holding them; BatchNorm with batch statistics) at initialisation and
       after each of ``early_steps`` steps at half the threshold η of λ1(init); its last value λ̂1
       absorbs the fast initial transient (λ1 of the BatchNorm CNN of the benchmark falls from
       8.3 to 5.9 in one step). For Adam, AdamW and RMSprop it is the *preconditioned* λ1(P⁻¹H),
       after ``warmup_steps`` steps at η = 0 have filled the second-moment estimate that P reads
       (an empty state would make P ≈ ε and λ1 meaningless).
    2. **Threshold inversion**: η_thr = a/(λ̂1 + wd) with a the optimiser's threshold × η (2 for SGD,
       2 + 2β heavy-ball, (2 + 2β)/(1 + 2β) Nesterov, (2 + 2β₁)/(1 − β₁) Adam, 2 + 2β RMSprop)
       and wd coupled weight decay (SGD family).
    3. **Catapult correction**: training survives above η_thr when the curvature falls fast
       enough after the loss starts to grow. How far is model-specific; measured on the four
       round-1 benchmark models (MNIST-1D, MSE, full-batch GD), η*/η_thr = 1.70–3.75: no single
       factor is within 1.5× on all of them. ``rule="catapult"`` (default) therefore measures the
       factor: short runs ("probes", ``probe_steps`` steps from the initial parameters, a fresh
       optimiser each) at η = f·η_thr, f = 2, then doubling or halving, then two bisections
       (resolution 2^(1/4)). A probe survives when it does not diverge, its loss ends clearly
       below the initial loss (≤ :data:`CLEARLY_BELOW` = 0.9 ×), and the network is neither
       dead (outputs that no longer depend on the inputs) nor at chance (no better than its own
       mean output, having started there: a stunned ReLU classifier sits at the class-frequency
       loss, below its random initial loss; see :func:`~landscope.monitor.short_runs.at_chance`).
       The prediction is the largest surviving η. ``rule="curvature"`` skips the probes and uses
       :data:`CATAPULT_FACTOR` = 1.70, the smallest factor measured with full-batch GD (cheaper,
       up to 2.2× low there; unmeasured for other optimisers).

    A warning is given when the measured factor is below 1: training then fails below the
    curvature threshold, so the early curvature does not bound what this model tolerates.

    Args:
        model: the model at its initialisation (copied, never modified).
        loss_fn: mean-reduced ``loss_fn(outputs, targets)`` for ``(X, y)`` batches; or
            ``batch_loss``; or neither for dict batches of a model returning ``.loss``.
        data: the training set ``(X, y)``, or a re-iterable of batches of any structure (a
            ``DataLoader``, a list of dicts), cycled by the runs.
        optimizer: ``"sgd"``/``"gd"`` (momentum > 0 makes it heavy-ball), ``"momentum"``,
            ``"nesterov"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``.
        momentum: β, PyTorch's form (SGD, Nesterov, RMSprop).
        batch_size: for ``(X, y)`` tensors: ``None`` for full-batch GD, else the minibatch size
            (seeded batches, without replacement within an epoch).
        batch_loss: ``f(model, batch)`` returning the batch's mean loss (any batch structure).
        batch_weight: ``g(batch)``, the batch's weight in the Hessian (default its sample count;
            :func:`~landscope.valid_tokens` for token losses).
        steps: the length of the run the η is for: sets the default ``probe_steps``
            (:func:`default_probe_steps`: 1/8 of it, 10 to 100).
        rule: ``"catapult"`` or ``"curvature"`` (see 3.).
        early_steps: steps of the early phase (λ1 measured after each).
        probe_steps: steps of each catapult probe (default from ``steps``).
        warmup_steps: η = 0 steps that fill Adam's / RMSprop's state before λ1(P⁻¹H) is read.
        hessian_samples: samples the Hessian is measured on and the probes are judged on: a
            seeded subset of ``(X, y)``, or the first batches holding them; ``None``: all;
            ``"auto"`` (default): 256 for full-batch training, else one training batch (so that
            a λ1 solve costs a few dozen training steps, not hundreds: on the GPT-2 of
            ``benchmarks/lr_workloads.py`` 256 sequences made the finder cost 40 % of the sweep).
        tol: relative residual of the eigensolver.
        diverge_factor: a run diverges when its loss exceeds this × the initial loss (or is NaN).
        betas: Adam's (β₁, β₂).
        eps: the adaptive optimisers' ε.
        weight_decay: the optimiser's weight decay (coupled L2 for SGD, decoupled for AdamW).
        range_test: also run :func:`~landscope.monitor.lr_range_test` (same model, data and
            optimiser) and keep it in the result: :meth:`LRFinderResult.plot` then draws the
            curvature bound and the probes over its loss-vs-lr curve. It is cheap (one 100-step
            run) and, measured in ``benchmarks/lr_workloads.py``, its ``min/10`` suggestion is the
            better choice for Adam-family optimisers.
        seed: seeds the subset, the batches, dropout and the eigensolver.
    """
    _check(model, rule, early_steps, probe_steps, steps, warmup_steps)
    if (
        hessian_samples != "auto"
        and hessian_samples is not None
        and (not isinstance(hessian_samples, int) or isinstance(hessian_samples, bool) or hessian_samples < 1)
    ):
        raise InputError(
            f"hessian_samples must be a positive integer, None (all) or 'auto', got {hessian_samples!r}"
        )
    choice = optimizer_choice(optimizer, momentum, betas, eps, weight_decay)
    f_loss = make_batch_loss(loss_fn, batch_loss)
    batches = Batches(data, batch_size, seed)
    probe_len = probe_steps if probe_steps is not None else default_probe_steps(steps)
    tic = time.perf_counter()
    a = choice.threshold_constant()
    wd = 0.0 if choice.preconditioned else choice.weight_decay
    with working_copy(model, seed) as work:
        work.train()
        theta0 = copy.deepcopy(work.state_dict())
        evaluation = batches.evaluation_set(
            batches.training_batch_samples() if hessian_samples == "auto" else hessian_samples
        )
        op = HessianOperator(
            work, loss_fn, evaluation, batch_loss=batch_loss, batch_weight=batch_weight, model_mode="train"
        )
        tracker = EigenTracker(k=1, tol=tol, seed=seed)
        stream = iter(batches)
        n_steps = 0
        opt = choice.build(work.parameters(), 0.0)
        if choice.preconditioned:
            # fill the second-moment estimate at θ0 (η = 0: the parameters do not move)
            run = train_steps(work, opt, f_loss, stream, warmup_steps, math.inf)
            n_steps += run.steps

        n_matvecs = 0

        def sharpness() -> float:
            o = PreconditionedOperator(op, adam_preconditioner(opt, op)) if choice.preconditioned else op
            res = tracker.update(o)
            nonlocal n_matvecs
            n_matvecs += res.n_matvecs
            return float(res.values[0])

        lam0 = sharpness()
        if not lam0 > 0:
            raise LandscopeError(
                f"λ1 at initialisation is {lam0:.4g}: no positive curvature whose threshold could be inverted"
            )
        early_lr = 0.5 * a / (lam0 + wd)
        for g in opt.param_groups:
            g["lr"] = early_lr
        steps_seen, traj = [0], [lam0]
        for t in range(early_steps):
            run = train_steps(work, opt, f_loss, stream, 1, diverge_factor)
            n_steps += run.steps
            if run.diverged:
                break
            steps_seen.append(t + 1)
            traj.append(sharpness())
        lam_early = traj[-1]
        if not (math.isfinite(lam_early) and lam_early > 0):
            raise LandscopeError(f"λ1 after {steps_seen[-1]} early steps is {lam_early:.4g}")
        thr_lr = a / (lam_early + wd)
        probes: list[Probe] = []
        custom = batch_loss is not None
        work.load_state_dict(theta0)
        chance0 = chance_ratio(work, None if custom else loss_fn, evaluation)  # where it started
        loss0 = mean_loss(work, f_loss, evaluation, batch_weight)  # every probe starts at θ0

        def survives(f: float) -> bool:
            nonlocal n_steps
            work.load_state_dict(theta0)
            torch.manual_seed(seed)
            o = choice.build(work.parameters(), f * thr_lr)
            r = train_steps(work, o, f_loss, iter(batches), probe_len, diverge_factor)
            n_steps += r.steps
            ratio, dead, chance = math.inf, None, None
            if not r.diverged:
                ratio = mean_loss(work, f_loss, evaluation, batch_weight) / loss0
                ratio = ratio if math.isfinite(ratio) else math.inf
                dead = outputs_collapsed(work, evaluation, custom)
                chance = at_chance(work, None if custom else loss_fn, evaluation, chance0)
            ok = not r.diverged and ratio <= CLEARLY_BELOW and not dead and not chance
            probes.append(
                Probe(
                    lr=f * thr_lr,
                    factor=f,
                    survived=ok,
                    steps=r.steps,
                    loss_ratio=ratio,
                    dead=bool(dead),
                    at_chance=bool(chance),
                )
            )
            return ok

        notes: list[str] = []
        if rule == "curvature":
            factor = CATAPULT_FACTOR
            rule_text = (
                f"curvature: η = {CATAPULT_FACTOR} × {a:.3g}/λ1 after {early_steps} steps "
                f"(a measured catapult factor)"
            )
        else:
            lo, hi = _search(survives)
            for _ in range(BISECTIONS if hi > lo else 0):
                mid = math.sqrt(lo * hi)
                lo, hi = (mid, hi) if survives(mid) else (lo, mid)
            factor = lo
            rule_text = (
                f"catapult: η = f × {a:.3g}/λ1 after {early_steps} steps, f the largest that "
                f"survived {probe_len}-step probes (loss ≤ {CLEARLY_BELOW} × initial, "
                "network alive)"
            )
            if factor < 1:
                notes.append(
                    f"the catapult factor is {factor:.3g} < 1: training failed below the "
                    f"curvature threshold η_thr = {thr_lr:.3g}, so the early curvature "
                    "does not bound what this model tolerates; the prediction rests on "
                    "the probes alone"
                )
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    curve = None
    if range_test:
        curve = lr_range_test(
            model,
            loss_fn,
            data,
            optimizer=optimizer,
            momentum=momentum,
            batch_size=batch_size,
            batch_loss=batch_loss,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            seed=seed,
        )
        n_steps += curve.n_train_steps
    return LRFinderResult(
        lr=factor * thr_lr,
        rule=rule_text,
        optimizer=choice.name,
        momentum=choice.momentum,
        lambda1_init=lam0,
        lambda1_steps=tuple(steps_seen),
        lambda1_trajectory=tuple(traj),
        lambda1_early=lam_early,
        early_lr=early_lr,
        threshold_constant=a,
        threshold_lr=thr_lr,
        catapult_factor=factor,
        probes=tuple(probes),
        probe_steps=probe_len,
        n_matvecs=n_matvecs,
        n_train_steps=n_steps,
        seconds=time.perf_counter() - tic,
        preconditioned=choice.preconditioned,
        notes=tuple(notes),
        range_test=curve,
    )


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
    raise LandscopeError(
        f"no probe survived, down to {MIN_FACTOR:g} × the threshold η: at every "
        f"learning rate tried, training diverged, died, or did not bring the loss "
        f"to {CLEARLY_BELOW} × its initial value within the probe (longer probes: "
        f"probe_steps=, or steps= for the planned run)"
    )
