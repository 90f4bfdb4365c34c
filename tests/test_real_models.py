"""Curvature of models users train today: attention, modules that read ``self.training``, torch 2.14.

Each case against an independent float64 reference (``tests/reference.py``: double backward through
``torch.autograd.functional``), built under the attention math kernel because the fused kernels
have no double backward at all.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from reference import dense_hessian, max_rel_err
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscope as ls
from landscope.curvature import CurvatureOperator, HessianOperator


def _sdpa_flags() -> tuple[bool, bool, bool]:
    b = torch.backends.cuda
    return b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled()


def _encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=12, dropout=0.1, batch_first=True)
    return nn.Sequential(layer, nn.Flatten(), nn.Linear(8 * 5, 3)).double()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_transformer_encoder_layer_products_match_the_reference(mode):
    """The default attention kernel (CPU flash) has no double backward: the operator must not use it."""
    model = _encoder()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(6, 5, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    names = ["0.self_attn.in_proj_weight", "0.self_attn.out_proj.bias", "2.weight"]
    model.train()  # left in train mode, as inside a training loop
    flags = _sdpa_flags()
    op = HessianOperator(model, F.cross_entropy, (X, y), params=names, model_mode=mode)
    H = op.to_dense()
    assert _sdpa_flags() == flags, "the caller's attention kernel setting was not restored"
    assert all(m.training for m in model.modules()), "training flags changed"
    with sdpa_kernel([SDPBackend.MATH]):
        # no BatchNorm here, so "train" mode is the dropout-free eval-mode function
        ref = dense_hessian(model, F.cross_entropy, X, y, names=names, mode="eval")
    assert max_rel_err(H, ref) <= 1e-10
    res = ls.eigenpairs(op, k=2, tol=1e-10)
    assert torch.allclose(res.values, torch.linalg.eigvalsh(ref).flip(0)[:2], rtol=1e-9, atol=0)


class _SelfDropout(nn.Module):
    """Dropout that reads ``self.training`` itself, as Hugging Face attention does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, p=0.5, training=self.training)


def test_modules_reading_self_training_are_off_in_train_mode():
    """Train mode means batch statistics for BatchNorm, and nothing random anywhere else."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), _SelfDropout(), nn.Linear(6, 2)
    ).double()
    model.train()
    X = torch.randn(12, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (12,))
    op = HessianOperator(model, F.cross_entropy, (X, y), model_mode="train")
    H1, H2 = op.to_dense(), HessianOperator(model, F.cross_entropy, (X, y), model_mode="train").to_dense()
    assert torch.equal(H1, H2)
    no_dropout = nn.Sequential(*[m for m in model if not isinstance(m, _SelfDropout)])
    ref = dense_hessian(no_dropout, F.cross_entropy, X, y, mode="train")
    assert max_rel_err(H1, ref) <= 1e-10
    assert all(m.training for m in model.modules())


class _AttachedOperator(CurvatureOperator):
    """A diagonal operator whose raw products stay attached to an autograd graph.

    This is what train-mode BatchNorm products look like on torch 2.14; a test on the base class
    catches it whatever the installed version does.
    """

    def __init__(self) -> None:
        self.dim, self.dtype, self.device = 6, torch.float64, torch.device("cpu")
        self.d = torch.linspace(1.0, 6.0, 6, dtype=torch.float64).requires_grad_()

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.d * v


def test_products_are_never_attached_to_a_graph():
    op = _AttachedOperator()
    assert not op.matvec(torch.ones(6, dtype=torch.float64)).requires_grad
    assert not op.matmat(torch.eye(6, dtype=torch.float64)).requires_grad
    for method in ("lanczos", "block", "power"):
        res = ls.eigenpairs(op, k=2, tol=1e-10, method=method)
        assert torch.allclose(res.values, torch.tensor([6.0, 5.0], dtype=torch.float64), rtol=1e-8)


def test_train_mode_batchnorm_products_are_detached(bn_dropout_case):
    c = bn_dropout_case
    op = HessianOperator(c.model, F.cross_entropy, (c.X, c.y), model_mode="train")
    assert not op.matvec(torch.randn(op.dim, dtype=op.dtype)).requires_grad
    assert ls.eigenpairs(op, k=1, tol=1e-6).converged


def _tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=16,
        vocab_size=40,
        n_positions=16,
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(cfg).double()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (4, 10), generator=g)
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[2, 7:] = 0
    mask[3, 5:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return model, {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_hf_gpt2_dict_batch_matches_the_dropout_free_reference(mode):
    """Issue 14's acceptance: default SDPA attention, dropout 0.1, left in train mode, no user code."""
    model, batch = _tiny_gpt2()
    assert model.config._attn_implementation == "sdpa"
    model.train()
    names = ["transformer.h.1.attn.c_attn.bias", "transformer.ln_f.weight"]
    op = HessianOperator(model, data=batch, params=names, model_mode=mode)
    H = op.to_dense()
    assert all(m.training for m in model.modules()), "training flags changed"
    ref_model = copy.deepcopy(model).eval()  # dropout off: the loss as a function of θ
    named = dict(ref_model.named_parameters())
    theta0 = torch.cat([named[n].detach().reshape(-1) for n in names])

    def loss(theta):
        parts = dict(zip(names, torch.split(theta, [named[n].numel() for n in names]), strict=True))
        return functional_call(
            ref_model, {n: t.reshape(named[n].shape) for n, t in parts.items()}, (), batch
        ).loss

    with sdpa_kernel([SDPBackend.MATH]):
        ref = torch.autograd.functional.hessian(loss, theta0)
    assert max_rel_err(H, ref) <= 1e-8
    res = ls.eigenpairs(op, k=1, tol=1e-10)
    assert float(res.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(ref)[-1]), rel=1e-8)


def test_readme_transformers_example_runs():
    pytest.importorskip("transformers")
    from reference import run_readme_example

    namespace = run_readme_example("Transformers and Hugging Face")
    mon, op, model = namespace["mon"], namespace["op"], namespace["model"]
    assert [r.step for r in mon.history] == [30, 35, 40] and all(r.lambda1 > 0 for r in mon.history)
    assert mon.history[-1].preconditioned  # AdamW: P⁻¹H
    # the two halves weighted by valid tokens are the Hessian of the whole batch's .loss
    whole = HessianOperator(model, data=namespace["batch"])
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))
    assert max_rel_err(op.matvec(v), whole.matvec(v)) <= 1e-5  # float32 model
