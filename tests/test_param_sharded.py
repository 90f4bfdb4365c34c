"""Parameters sharded too: 2 and 3 gloo processes, each holding only its rows of every weight.

Products must equal a dense float64 Hessian of the whole model (``torch.autograd.functional``),
eigenvalues the single-process solve's to 1e-8 with the same number of products; a model built
on the meta device (never whole on any rank) takes its shards from an FSDP2-wrapped copy; each
rank keeps about 1/R of the parameters.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from gloo import spawn
from torch import nn
from torch.func import functional_call

import landscope as ls
from landscope.curvature.modes import math_attention
from landscope.distributed import ParamShardedHessianOperator
from landscope.distributed.param_sharded import ParamShardLayout, row_bounds
from landscope.distributed.sharded import shard_bounds

WORLD = 3
SIZES = (2, 3)
TOL = 1e-10
N = 30


def _cnn() -> nn.Sequential:
    """Conv + eval BatchNorm (non-trivial statistics) + CE head; 4 output rows: rank 2 of 3 holds none."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Flatten(), nn.Linear(18, 4)
    ).double()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.3, -0.2, 0.1]))
        model[1].running_var.copy_(torch.tensor([0.5, 2.0, 1.3]))
        model[1].weight.copy_(torch.tensor([1.2, 0.7, -0.9]))
    return model


class _Pool(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=1)


def _transformer() -> nn.Sequential:
    """Token ids → embedding → one attention block → mean pool → CE head (an int input stage)."""
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Embedding(11, 8), block, _Pool(), nn.Linear(8, 3)).double()


def _mlp(device: str = "cpu") -> nn.Sequential:
    """24 rows a layer: 1/R of them on each of 2 or 3 ranks (the head's 2 rows: one rank each, or none)."""
    torch.manual_seed(0)
    with torch.device(device):
        return nn.Sequential(
            nn.Linear(5, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 2)
        ).double()


def _data(case: str):
    g = torch.Generator().manual_seed(1)
    if case == "transformer":
        X = torch.randint(0, 11, (N, 6), generator=g)
        return X, torch.randint(0, 3, (N,), generator=g), nn.functional.cross_entropy
    if case == "mse":
        X = torch.randn(N, 5, generator=g, dtype=torch.float64)
        return X, torch.randn(N, 2, generator=g, dtype=torch.float64), nn.functional.mse_loss
    X = torch.randn(N, 2, 8, generator=g, dtype=torch.float64)
    return X, torch.randint(0, 4, (N,), generator=g), nn.functional.cross_entropy


# (name, model, data, operator keywords); the conv cases run both kernels (landscope's default
# second-order forms, and PyTorch's formulas)
CASES = {
    "cnn-bn": (_cnn, "cnn", {"chunk_size": 8}),
    "cnn-bn-train": (_cnn, "cnn", {"chunk_size": 5, "model_mode": "train", "kernels": "torch"}),
    "transformer": (_transformer, "transformer", {}),
    "mse": (_mlp, "mse", {}),
}


# uneven data shards, so the ranks run different numbers of chunks (1, 3; 1, 1, 2), and in the
# train-mode case whole chunks of 5 as in the single process, rank 0 of 3 without data
SPLITS = {
    "cnn-bn": {2: [(0, 8), (8, 30)], 3: [(0, 8), (8, 16), (16, 30)]},
    "cnn-bn-train": {2: [(0, 10), (10, 30)], 3: [(0, 0), (0, 10), (10, 30)]},
}
BLOCK = ("transformer", "mse")  # the block solver too (matmat through the sharded layout)
# the conv cases' products are the slow ones (about 0.1 s each): on 3 ranks only
RUNS = [(3, name) for name in CASES] + [(2, "transformer"), (2, "mse")]


def _direction(dim: int) -> torch.Tensor:
    return torch.randn(dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _fsdp_meta_case(rank: int, world: int) -> dict:
    """A model never whole on this rank: built on meta, its rows taken from an FSDP2-wrapped copy."""
    from torch.distributed.fsdp import fully_shard

    trained = _mlp()
    for layer in (trained[0], trained[2], trained[4]):
        fully_shard(layer)
    fully_shard(trained)
    shards = {n: p.to_local() for n, p in trained.named_parameters()}
    meta = _mlp("meta")
    X, y, loss_fn = _data("mse")
    lo, hi = shard_bounds(N, world, rank)
    op = ParamShardedHessianOperator(meta, loss_fn, (X[lo:hi], y[lo:hi]), shards=shards)
    res = ls.eigenpairs(op, k=2, tol=TOL, seed=0)
    return {
        "values": res.values,
        "n_matvecs": res.n_matvecs,
        "hv": op.gather(op.matvec(op.shard(_direction(op.layout.global_dim)))),
        "local_params": sum(t.numel() for t in op.local_shards().values()),
        "meta": all(p.is_meta for p in meta.parameters()),
    }


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    groups = {size: dist.new_group(list(range(size))) for size in SIZES}
    results: dict = {}
    for size in SIZES:
        if rank >= size:
            continue
        for name, (build, data, kwargs) in CASES.items():
            if (size, name) not in RUNS:
                continue
            X, y, loss_fn = _data(data)
            lo, hi = SPLITS[name][size][rank] if name in SPLITS else shard_bounds(N, size, rank)
            shard = (X[lo:hi], y[lo:hi]) if hi > lo else None
            op = ParamShardedHessianOperator(build(), loss_fn, shard, group=groups[size], **kwargs)
            res = ls.eigenpairs(op, k=3, tol=TOL, seed=0)
            block = ls.eigenpairs(op, k=2, tol=TOL, seed=0, method="block") if name in BLOCK else None
            results[size, name] = {
                "values": res.values,
                "n_matvecs": res.n_matvecs,
                "block": block.values if block is not None else None,
                "vectors": op.gather(res.vectors),
                "hv": op.gather(op.matvec(op.shard(_direction(op.layout.global_dim)))),
                "grad": op.gather(op.gradient()),
                "loss": op.loss(),
                "local": op.dim,
                "local_params": sum(t.numel() for t in op.local_shards().values()),
            }
    results["fsdp"] = _fsdp_meta_case(rank, WORLD)
    torch.save(results, f"{out}.{rank}.part")
    Path(f"{out}.{rank}.part").rename(f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("param_sharded")
    files = [Path(f"{tmp / 'res'}.{r}") for r in range(WORLD)]
    spawn(_worker, WORLD, (f"file://{tmp / 'rendezvous'}", str(tmp / "res")), files)
    return [torch.load(f) for f in files]


def _dense(model: nn.Module, X, y, loss_fn, mode: str, chunk: int | None):
    """The float64 Hessian of the mean loss by ``torch.autograd.functional``: independent of landscope."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = dict(model.named_buffers())
    model.train(mode == "train")

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = theta[start : start + math.prod(s)].reshape(s)
            start += math.prod(s)
        step = chunk or len(X)
        total = theta.new_zeros(())
        for s in range(0, len(X), step):
            b = {k: v.clone() for k, v in buffers.items()}  # train mode must not move the statistics
            out = functional_call(model, (params, b), (X[s : s + step],))
            total = total + loss_fn(out, y[s : s + step]) * (min(step, len(X) - s) / len(X))
        return total

    with math_attention():  # the fused attention kernels have no double backward
        H = torch.autograd.functional.hessian(loss, flat)
        g = torch.autograd.functional.jacobian(loss, flat)
        value = float(loss(flat))
    model.eval()
    return H, g, value


@pytest.mark.slow
@pytest.mark.parametrize("size,name", RUNS, ids=[f"{n}-{s}" for s, n in RUNS])
def test_products_and_eigenvalues_equal_the_whole_models(results, size, name):
    build, data, kwargs = CASES[name]
    X, y, loss_fn = _data(data)
    model = build()
    H, g, value = _dense(model, X, y, loss_fn, kwargs.get("model_mode", "eval"), kwargs.get("chunk_size"))
    ref = ls.eigenpairs(ls.HessianOperator(model, loss_fn, (X, y), **kwargs), k=3, tol=TOL, seed=0)
    assert ref.values[0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-9)
    v = _direction(H.shape[0])
    ranks = [results[r][size, name] for r in range(size)]
    scale = float(ref.values.abs().max())
    for r in ranks:
        assert torch.allclose(r["hv"], H @ v, rtol=0, atol=1e-10 * float((H @ v).abs().max()))
        assert torch.allclose(r["grad"], g, rtol=0, atol=1e-12)
        assert r["loss"] == pytest.approx(value, rel=1e-12)
        assert torch.allclose(r["values"], ref.values, rtol=0, atol=1e-8 * scale)
        if name in BLOCK:
            assert torch.allclose(r["block"], ref.values[:2], rtol=0, atol=1e-8 * scale)
        assert r["n_matvecs"] == ref.n_matvecs  # the same steps: the start is the same global draw
        assert torch.equal(r["values"], ranks[0]["values"])  # bit-identical on every rank
        assert ls.subspace_overlap(r["vectors"][:, :1], ref.vectors[:, :1]) == pytest.approx(1.0, abs=1e-8)
    dim = H.shape[0]
    assert sum(r["local_params"] for r in ranks) == dim  # the rows tile every parameter
    assert [r["local"] for r in ranks] == [r["local_params"] for r in ranks]
    rows = [
        sum(
            math.prod(p.shape[1:]) * (hi - lo)
            for p in model.parameters()
            for lo, hi in [row_bounds(len(p), size, rank)]
        )
        for rank in range(size)
    ]
    assert [r["local_params"] for r in ranks] == rows  # FSDP2's rows of dim 0, and no more
    if name == "mse":  # rows divisible by R: about 1/R of the parameters on every rank
        assert max(rows) <= 1.1 * dim / size, (rows, dim)


@pytest.mark.slow
def test_a_meta_model_takes_its_rows_from_fsdp2(results):
    """FSDP2's ``to_local()`` rows are the operator's layout: no rank ever holds the whole model."""
    X, y, loss_fn = _data("mse")
    model = _mlp()
    H, _, _ = _dense(model, X, y, loss_fn, "eval", None)
    ref = ls.eigenpairs(ls.HessianOperator(model, loss_fn, (X, y)), k=2, tol=TOL, seed=0)
    v = _direction(H.shape[0])
    for r in range(WORLD):
        got = results[r]["fsdp"]
        assert got["meta"]
        assert torch.allclose(got["hv"], H @ v, rtol=0, atol=1e-10 * float((H @ v).abs().max()))
        assert torch.allclose(got["values"], ref.values, rtol=0, atol=1e-8 * float(ref.values.abs().max()))
        assert got["n_matvecs"] == ref.n_matvecs
        assert got["local_params"] < H.shape[0] / 2
    assert sum(results[r]["fsdp"]["local_params"] for r in range(WORLD)) == H.shape[0]


@pytest.mark.parametrize("rows,world", [(4, 3), (5, 4), (1, 3), (12, 3), (7, 1)], ids=str)
def test_row_bounds_are_torch_chunks(rows, world):
    chunks = torch.arange(rows).chunk(world)
    bounds = [row_bounds(rows, world, r) for r in range(world)]
    assert [hi - lo for lo, hi in bounds][: len(chunks)] == [len(c) for c in chunks]
    assert all(hi == lo for lo, hi in bounds[len(chunks) :])  # ranks past torch.chunk's last hold none
    assert bounds[0][0] == 0 and bounds[-1][1] == rows


@pytest.mark.parametrize("chunk", [1 << 24, 4], ids=["one draw", "chunked"])
def test_the_layouts_start_vector_is_its_segments_of_the_whole_one(monkeypatch, chunk):
    from landscope.curvature import linear

    monkeypatch.setattr(linear, "NORMAL_CHUNK", chunk)
    segments = [(0, 2), (5, 3), (9, 0), (11, 6)]
    whole = linear.VectorLayout(20).normal(torch.Generator().manual_seed(3), torch.device("cpu"))
    part = ParamShardLayout(20, segments).normal(torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(part, torch.cat([whole[a : a + m] for a, m in segments]))


def test_needs_an_initialised_process_group():
    with pytest.raises(
        ls.InputError, match="ParamShardedHessianOperator needs torch.distributed initialised"
    ):
        X, y, loss_fn = _data("mse")
        ParamShardedHessianOperator(_mlp(), loss_fn, (X, y))


@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_bad_input_names_the_value(one_rank):
    X, y, loss_fn = _data("mse")
    with pytest.raises(ls.InputError, match="non-empty list of nn.Modules"):
        ParamShardedHessianOperator(nn.Linear(5, 2), loss_fn, (X, y))
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(5, 2))
    with pytest.raises(ls.InputError, match=r"parameter '0.weight' is on the meta device: pass"):
        ParamShardedHessianOperator(meta, loss_fn, (X, y))
    shards = {"0.weight": torch.zeros(2, 4), "0.bias": torch.zeros(2)}
    with pytest.raises(
        ls.InputError, match=r"shard of '0.weight' has shape \(2, 4\); rank 0 of 1 holds rows \[0, 2\)"
    ):
        ParamShardedHessianOperator(meta, loss_fn, (X, y), shards=shards)
    tied = nn.Sequential(nn.Embedding(11, 4), nn.Linear(4, 11, bias=False))
    tied[1].weight = tied[0].weight  # a tied head
    with pytest.raises(ls.InputError, match=r"parameter '1.weight' is the same tensor as '0.weight'"):
        ParamShardedHessianOperator(tied, loss_fn, (X, y))
    with pytest.raises(ls.InputError, match="kernels must be 'landscope' or 'torch', got 'cudnn'"):
        ParamShardedHessianOperator(_mlp(), loss_fn, (X, y), kernels="cudnn")
    with pytest.raises(ls.InputError, match="shards has no entry for parameter '0.bias'"):
        ParamShardedHessianOperator(meta, loss_fn, (X, y), shards={"0.weight": torch.zeros(2, 5)})


def test_one_rank_is_the_whole_hessian(one_rank):
    """World size 1: the same operator as HessianOperator, and a stage that returns no tensor is named."""
    X, y, loss_fn = _data("cnn")
    model = _cnn()
    op = ParamShardedHessianOperator(model, loss_fn, (X, y), chunk_size=7)
    whole = ls.HessianOperator(model, loss_fn, (X, y))
    v = _direction(op.dim)
    assert torch.allclose(op.matvec(v), whole.matvec(v), atol=1e-12)
    bad = nn.Sequential(nn.Flatten(), _Tuple(), nn.Linear(16, 4)).double()
    with pytest.raises(ls.InputError, match=r"stage 1 \(_Tuple\) must return a float tensor, got tuple"):
        ParamShardedHessianOperator(bad, loss_fn, (X, y)).matvec(torch.zeros(68, dtype=torch.float64))


class _Tuple(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple:
        return (x,)
