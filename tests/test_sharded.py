"""The sharded Lanczos: 2, 3 and 4 gloo processes, each holding a slice of every vector.

Eigenvalues must equal the single-process solve to 1e-8 (float64), the gathered eigenvectors the
single-process ones, and each rank's Krylov basis must be about 1/R of the unsharded one (the
basis allocations are recorded by wrapping ``torch.empty`` in the worker).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from gloo import spawn

import landscope as ls
from landscope.distributed import ShardedHessianOperator, ShardedOperator
from landscope.distributed.sharded import shard_bounds
from landscope.models import mlp

WORLD = 4
SIZES = (2, 3, 4)
# (name, loss, eigenpairs keywords): the MSE last layer repeats every eigenvalue C times, so the
# multiplicity probe and its block solve run there, sharded too
CASES = [
    ("top1", "ce", {"k": 1}),
    ("top3", "ce", {"k": 3}),
    ("block", "ce", {"k": 4, "method": "block"}),
    ("bottom", "ce", {"k": 2, "which": "SA"}),
    ("repeated", "mse", {"k": 4}),
    ("exhaustive", "mse", {"k": 4, "check_multiplicity": True}),
]
TOL = 1e-10


def _problem(loss: str):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(24, 5, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    if loss == "ce":
        model = mlp(5, 3, width=6, depth=2).double()
        return model, torch.nn.functional.cross_entropy, X, torch.randint(0, 3, (24,), generator=g)
    # MSE on one linear layer: H = (2/C)·(X̃ᵀX̃/N) ⊗ I_C exactly (X̃ = [X, 1]), so every one of its 41
    # distinct eigenvalues repeats C = 3 times, and a single Krylov chain converges before it
    # sees a second copy
    X = torch.randn(60, 40, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(40, 3).double()
    return model, torch.nn.functional.mse_loss, X, torch.randn(60, 3, generator=g, dtype=torch.float64)


def _basis_rows(records: list[tuple[int, ...]], width: int) -> int:
    """The largest float64 2-D allocation of ``width`` columns: the Krylov basis (rows × width)."""
    return max((shape[0] for shape in records if len(shape) == 2 and shape[1] == width), default=0)


def _recording(empty, records: list[tuple[int, ...]]):
    """``torch.empty`` that records the shape of every float64 allocation in ``records``."""

    def recording_empty(*shape, **kwargs):
        t = empty(*shape, **kwargs)
        if t.dtype == torch.float64:
            records.append(tuple(t.shape))
        return t

    return recording_empty


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    groups = {size: dist.new_group(list(range(size))) for size in SIZES}  # every rank joins each
    results = {}
    empty, records = torch.empty, []
    recording_empty = _recording(empty, records)
    for size in SIZES:
        if rank >= size:
            continue
        for name, loss, kwargs in CASES:
            model, loss_fn, X, y = _problem(loss)
            lo, hi = shard_bounds(len(X), size, rank)  # a data shard too: products all-reduce
            op = ShardedHessianOperator(model, loss_fn, (X[lo:hi], y[lo:hi]), group=groups[size])
            records.clear()
            torch.empty = recording_empty
            try:
                res = ls.eigenpairs(op, tol=TOL, seed=0, **kwargs)
            finally:
                torch.empty = empty
            results[size, name] = {
                "values": res.values,
                "n_matvecs": res.n_matvecs,
                "converged": res.converged,
                "vectors": op.gather(res.vectors),
                "local": op.dim,
                "basis_rows": _basis_rows(records, op.dim),
                "loss": op.loss(),
                "grad": op.gather(op.gradient()),
            }
    results["fsdp"] = _fsdp_case(rank)
    torch.save(results, f"{out}.{rank}.part")
    Path(f"{out}.{rank}.part").rename(f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def _fsdp_case(rank: int) -> dict:
    """docs/scaling.md's FSDP recipe on all WORLD ranks: full state dict → plain copy → sharded op.

    FSDP2 shards every parameter over the ranks, but a Hessian product cannot run through it
    (its all-gather is not differentiated: double backward finds the sharded parameters unused),
    so the operator is built on a plain copy loaded from the full state dict.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard

    model, loss_fn, X, y = _problem("ce")
    fully_shard(model)
    local = sum(p.to_local().numel() for p in model.parameters())
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    torch.manual_seed(99)  # a differently initialised copy: only the loaded weights make it right
    plain = mlp(5, 3, width=6, depth=2).double()
    plain.load_state_dict(full)
    lo, hi = shard_bounds(len(X), WORLD, rank)
    op = ShardedHessianOperator(plain, loss_fn, (X[lo:hi], y[lo:hi]))
    res = ls.eigenpairs(op, k=3, tol=TOL, seed=0)
    dim = op.layout.global_dim
    return {"values": res.values, "converged": res.converged, "local_params": local, "dim": dim}


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    files = [Path(f"{tmp / 'res'}.{r}") for r in range(WORLD)]
    spawn(_worker, WORLD, (f"file://{tmp / 'rendezvous'}", str(tmp / "res")), files)
    return [torch.load(f) for f in files]


def _reference(loss: str, kwargs: dict, record: bool = False):
    model, loss_fn, X, y = _problem(loss)
    op = ls.HessianOperator(model, loss_fn, (X, y))
    empty, records = torch.empty, []
    torch.empty = _recording(empty, records)
    try:
        res = ls.eigenpairs(op, tol=TOL, seed=0, **kwargs)
    finally:
        torch.empty = empty
    return op, res, _basis_rows(records, op.dim)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name,loss,kwargs", CASES, ids=[c[0] for c in CASES])
def test_sharded_solve_equals_the_single_process_one(sharded_results, size, name, loss, kwargs):
    op, ref, ref_rows = _reference(loss, kwargs)
    ranks = [sharded_results[r][size, name] for r in range(size)]
    for r in ranks:
        assert r["converged"] and ref.converged
        assert torch.allclose(r["values"], ref.values, rtol=0, atol=1e-8 * float(ref.values.abs().max()))
        assert torch.equal(r["values"], ranks[0]["values"])  # bit-identical on every rank
        assert r["n_matvecs"] == ranks[0]["n_matvecs"]
        # the gathered eigenvectors span the single-process ones; in the MSE cases only the top
        # eigenspace (3 copies) is determined: the 4th vector is any of the next value's copies
        top = 3 if loss == "mse" else ref.k
        overlap = ls.subspace_overlap(r["vectors"][:, :top], ref.vectors[:, :top])
        assert overlap == pytest.approx(1.0, abs=1e-8)
        assert r["loss"] == pytest.approx(op.loss(), rel=1e-12)
        assert torch.allclose(r["grad"], op.gradient(), atol=1e-12)
    sizes = [shard_bounds(op.dim, size, rank) for rank in range(size)]
    assert [r["local"] for r in ranks] == [hi - lo for lo, hi in sizes]
    # the basis: each rank holds its slice of every row, about 1/R of the unsharded memory
    for r in ranks:
        assert r["basis_rows"] > 0
        basis = r["basis_rows"] * r["local"]
        assert basis <= 1.1 * ref_rows * op.dim / size, (basis, ref_rows * op.dim / size)


@pytest.mark.slow
def test_the_repeated_case_needs_the_probe(sharded_results):
    """The MSE case is a real multiplicity case: without the probe one copy is missed."""
    _, plain, _ = _reference("mse", {"k": 4, "check_multiplicity": False})
    _, probed, _ = _reference("mse", {"k": 4})
    assert probed.values[3] > plain.values[3] * (1 + 1e-6)
    assert torch.allclose(sharded_results[0][2, "repeated"]["values"], probed.values, atol=1e-8)


@pytest.mark.slow
def test_an_fsdp_model_through_its_full_state_dict(sharded_results):
    """An FSDP2 model (parameters sharded over 4 ranks) measured by the documented recipe."""
    _, ref, _ = _reference("ce", {"k": 3})
    for r in range(WORLD):
        got = sharded_results[r]["fsdp"]
        assert got["converged"]
        assert torch.allclose(got["values"], ref.values, rtol=0, atol=1e-8 * float(ref.values.abs().max()))
        assert got["local_params"] < got["dim"]  # FSDP really held only a shard of the weights
    assert sum(sharded_results[r]["fsdp"]["local_params"] for r in range(WORLD)) == ref.vectors.shape[0]


def test_needs_an_initialised_process_group():
    model, loss_fn, X, y = _problem("ce")
    with pytest.raises(ls.InputError, match="ShardedHessianOperator needs torch.distributed initialised"):
        ShardedHessianOperator(model, loss_fn, (X, y))
    with pytest.raises(ls.InputError, match="ShardedOperator needs torch.distributed initialised"):
        ShardedOperator(ls.HessianOperator(model, loss_fn, (X, y)))


@pytest.mark.parametrize(
    "global_dim,world", [(10, 3), (7, 7), (155, 4), (1, 1), (100, 3)], ids=lambda v: str(v)
)
def test_shard_bounds_tile_the_vector(global_dim, world):
    bounds = [shard_bounds(global_dim, world, r) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == global_dim
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("chunk", [1 << 24, 7], ids=["one draw", "chunked"])
@pytest.mark.parametrize("offset,dim", [(0, 20), (5, 9), (14, 6), (0, 1), (19, 1)])
def test_a_shards_start_vector_is_its_slice_of_the_whole_one(monkeypatch, chunk, offset, dim):
    """Same seed, same start vector, however it is sharded (chunked draws beyond NORMAL_CHUNK)."""
    from landscope.curvature import linear

    monkeypatch.setattr(linear, "NORMAL_CHUNK", chunk)
    whole = linear.VectorLayout(20).normal(torch.Generator().manual_seed(3), torch.device("cpu"))
    part = linear.VectorLayout(20, offset, dim).normal(torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(part, whole[offset : offset + dim])
    assert whole.dtype == torch.float64 and whole.shape == (20,)


def test_the_whole_layout_draws_what_it_always_drew():
    """Below NORMAL_CHUNK the start vector is torch.randn's, so seeded results are unchanged."""
    from landscope.curvature.linear import VectorLayout

    got = VectorLayout(1000).normal(torch.Generator().manual_seed(0), torch.device("cpu"))
    expected = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(got, expected)


class _FakeShards(ls.curvature.linear.VectorLayout):
    sharded = True


def _sharded_diagonal():
    op = ls.DiagonalOperator(torch.arange(1.0, 11.0, dtype=torch.float64))
    op.layout = _FakeShards(20, 0, 10)
    return op


@pytest.mark.parametrize(
    "call,what",
    [
        (lambda op: ls.power_iteration(op, k=1), "power_iteration"),
        (lambda op: ls.eigenpairs(op, k=1, method="power"), "method='power'"),
        (lambda op: ls.eigenpairs(op, k=1, method="dense"), "method='dense'"),
        (lambda op: ls.spectral_density(op, n_probes=1, n_steps=3), "spectral_density"),
        (lambda op: ls.hutchinson_trace(op, n_probes=2), "hutchinson_trace"),
        (lambda op: ls.EigenTracker(k=1).update(op), "EigenTracker"),
    ],
    ids=["power", "eig-power", "eig-dense", "density", "trace", "tracker"],
)
def test_whole_vector_code_refuses_a_sharded_operator_with_one_message(call, what):
    with pytest.raises(ls.InputError, match=rf"{what} needs whole vectors; DiagonalOperator is sharded"):
        call(_sharded_diagonal())


def test_operators_sharded_differently_do_not_combine():
    a = _sharded_diagonal()
    b = ls.DiagonalOperator(torch.ones(10, dtype=torch.float64))
    with pytest.raises(ls.InputError, match="sharded differently"):
        a + b
    shifted = a - 2.0 * ls.IdentityOperator.like(a)  # the layout travels with the algebra
    assert shifted.layout.sharded and shifted.layout.global_dim == 20
    assert ls.PreconditionedOperator(a, torch.ones(10, dtype=torch.float64)).layout is a.layout
