"""Data-parallel curvature with two gloo processes equals the single-process operator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gloo import spawn

import landscope as ls
from landscope.distributed import DistributedHessianOperator, is_main_process
from landscope.models import mlp

SHARDS = {2: (0, 7, 20), 3: (0, 0, 20)}  # uneven shards; in the second, rank 0 has no data


def _problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    torch.manual_seed(0)
    model = mlp(6, 3, width=5, depth=1).double()
    return model, X, y


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, X, y = _problem()
    for split, (lo, mid, hi) in SHARDS.items():
        shard = (X[lo:mid], y[lo:mid]) if rank == 0 else (X[mid:hi], y[mid:hi])
        op = DistributedHessianOperator(
            model, torch.nn.functional.cross_entropy, shard if len(shard[0]) else None
        )
        v = torch.arange(op.dim, dtype=torch.float64) / op.dim
        res = ls.eigenpairs(op, k=3, tol=1e-8, seed=0)
        result = {
            "hv": op @ v,
            "values": res.values,
            "grad": op.gradient(),
            "loss": op.loss(),
            "rank": rank,
            "main": is_main_process(),
        }
        torch.save(result, f"{out}.{split}.{rank}.part")
        Path(f"{out}.{split}.{rank}.part").rename(f"{out}.{split}.{rank}")
    torch.distributed.barrier()  # no rank tears gloo down while a peer is still in a collective
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory):
    """Two gloo processes, each computing products and eigenpairs on its shard (every split)."""
    tmp = tmp_path_factory.mktemp("gloo")
    files = {split: [Path(f"{tmp / 'res'}.{split}.{r}") for r in (0, 1)] for split in SHARDS}
    args = (2, f"file://{tmp / 'rendezvous'}", str(tmp / "res"))
    spawn(_worker, 2, args, [f for fs in files.values() for f in fs], timeout=120)
    return {split: [torch.load(f) for f in fs] for split, fs in files.items()}


@pytest.mark.slow
@pytest.mark.parametrize("split", sorted(SHARDS))
def test_two_gloo_processes_match_one(gloo_results, split):
    model, X, y = _problem()
    op = ls.HessianOperator(model, torch.nn.functional.cross_entropy, (X, y))
    v = torch.arange(op.dim, dtype=torch.float64) / op.dim
    ref = ls.eigenpairs(op, k=3, tol=1e-8, seed=0)
    results = gloo_results[split]
    for r in results:
        assert torch.allclose(r["hv"], op @ v, rtol=0, atol=1e-12)
        assert torch.allclose(r["values"], ref.values, rtol=1e-6)
        assert torch.allclose(r["grad"], op.gradient(), atol=1e-12)
        assert r["loss"] == pytest.approx(op.loss(), rel=1e-12)
    assert torch.equal(results[0]["values"], results[1]["values"])  # identical on every rank
    assert [r["main"] for r in results] == [True, False]


def test_needs_an_initialised_process_group():
    model, X, y = _problem()
    with pytest.raises(ls.InputError, match="torch.distributed initialised"):
        DistributedHessianOperator(model, torch.nn.functional.cross_entropy, (X, y))
    assert is_main_process()
