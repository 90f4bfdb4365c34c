"""Models (DESIGN §5): shapes for every architecture and norm, seeding, and the init schemes.

The meta-initialisations are checked against quantities recomputed here independently: the
gradient quotient through ``torch.func`` (forward-over-reverse Hg, not the double backward the
library uses), and GradInit's post-step loss on its held-out half and on fresh data.
"""

import inspect
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from landscope.errors import InputError
from landscope.models import (
    INITS,
    MODELS,
    NORMS,
    apply_init,
    build_model,
    cnn2d,
    fixup_init,
    get_loss,
    gradient_quotient,
    gradinit,
    metainit,
    mlp,
    resnet_lite,
)

SHAPES = [(40,), (2, 40), (1, 28, 28), (3, 32, 32)]
SMALL = {"width": 4, "depth": 2}


def _data(shape, n=64, seed=0, n_classes=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, n_classes, (n,), generator=g)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _gq_reference(model, loss_fn, X, y, eps=1e-5):
    """MetaInit's GQ with Hg by forward-over-reverse (torch.func.jvp of grad)."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p):
        return loss_fn(functional_call(model, p, (X,)), y)

    g = grad(loss)(params)
    _, hg = jvp(grad(loss), (params,), (g,))
    total = sum(
        ((g[n] - hg[n]) / (g[n] + eps * torch.where(g[n] >= 0, 1.0, -1.0)) - 1).abs().sum() for n in params
    )
    return float(total) / sum(p.numel() for p in params.values())


def _post_step_loss(model, loss_fn, step_batch, eval_batch, eta=0.1):
    """Loss on ``eval_batch`` after one normalised-gradient SGD step on ``step_batch``."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    g = grad(lambda p: loss_fn(functional_call(model, p, (step_batch[0],)), step_batch[1]))(params)
    norm = torch.sqrt(sum((v * v).sum() for v in g.values()))
    stepped = {n: params[n] - eta * g[n] / norm for n in params}
    with torch.no_grad():
        return float(loss_fn(functional_call(model, stepped, (eval_batch[0],)), eval_batch[1]))


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", MODELS)
def test_every_model_and_norm_maps_a_batch_to_logits(name, norm, shape):
    model = build_model(name, shape, 10, norm=norm, activation="relu", **SMALL)
    X, _ = _data(shape, n=3)
    assert model(X).shape == (3, 10)
    model.eval()
    assert model(X).shape == (3, 10)
    has = {type(m) for m in model.modules()}
    if norm == "batch":
        assert has & {nn.BatchNorm1d, nn.BatchNorm2d}
    elif norm == "layer":
        assert has & {nn.LayerNorm, nn.GroupNorm}
    else:
        assert not has & {nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm}


@pytest.mark.parametrize("shape", SHAPES)
def test_fixup_resnet_maps_a_batch_to_logits(shape):
    model = build_model("resnet_lite", shape, 7, init="fixup", **SMALL)
    assert model(_data(shape, n=3)[0]).shape == (3, 7)


def test_width_and_depth_mapping():
    cnn = build_model("cnn", (3, 32, 32), 10, width=8, depth=3)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv2d)] == [8, 16, 32]
    cnn1 = build_model("cnn", (40,), 10, width=8, depth=2)
    assert [m.out_channels for m in cnn1.modules() if isinstance(m, nn.Conv1d)] == [8, 16]
    res = build_model("resnet_lite", (40,), 10, width=8, depth=3)
    assert len(res.residual_blocks) == 3
    assert [b.conv2.out_channels for b in res.residual_blocks] == [8, 16, 32]
    flat = build_model("mlp", (1, 28, 28), 10, width=16, depth=3)
    assert isinstance(flat[0], nn.Flatten) and flat[1].in_features == 784
    assert sum(isinstance(m, nn.Linear) for m in flat) == 4


def test_mlp_norm_is_linear_norm_act_and_none_keeps_the_old_layout():
    assert sum(p.numel() for p in mlp(40, 10, width=32, depth=2).parameters()) == 2698
    assert [type(m) for m in mlp(5, 3, width=6, depth=1)] == [nn.Linear, nn.Tanh, nn.Linear]
    assert [type(m) for m in mlp(5, 3, width=6, depth=1, norm="batch")] == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.Tanh,
        nn.Linear,
    ]
    assert [type(m) for m in mlp(5, 3, width=6, depth=1, norm="layer")] == [
        nn.Linear,
        nn.LayerNorm,
        nn.Tanh,
        nn.Linear,
    ]


def test_cnn2d_accepts_images_with_or_without_the_channel_axis():
    net = cnn2d(1, 10, channels=(4, 8), norm="layer")
    assert net(torch.zeros(2, 1, 28, 28)).shape == net(torch.zeros(2, 28, 28)).shape == (2, 10)


def test_resnet_lite_downsamples_between_stages_with_projection_shortcuts():
    net = resnet_lite((3, 32, 32), 10, width=4, stages=3, blocks_per_stage=2)
    blocks = net.residual_blocks
    assert len(blocks) == 6
    assert [b.projects for b in blocks] == [False, False, True, False, True, False]
    assert [b.conv1.stride for b in blocks if b.projects] == [(2, 2), (2, 2)]


# ----------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_weights_other_seed_other_weights_global_rng_untouched(name):
    state = torch.get_rng_state()
    a = _params(build_model(name, (40,), 10, seed=3, **SMALL))
    b = _params(build_model(name, (40,), 10, seed=3, **SMALL))
    c = _params(build_model(name, (40,), 10, seed=4, **SMALL))
    assert torch.equal(torch.get_rng_state(), state)
    assert _same(a, b)
    assert not _same(a, c)


def test_scaled_multiplies_every_weight_tensor_by_init_scale():
    for name, shape in (("mlp", (40,)), ("cnn", (3, 32, 32)), ("resnet_lite", (40,))):
        base = build_model(name, shape, 10, norm="batch", seed=1, **SMALL)
        big = build_model(name, shape, 10, norm="batch", seed=1, init="scaled", init_scale=2.5, **SMALL)
        for (n, p), q in zip(base.named_parameters(), big.parameters(), strict=True):
            if p.dim() >= 2:
                assert torch.allclose(q.norm(), 2.5 * p.norm(), rtol=1e-6), n
                assert torch.allclose(q, 2.5 * p), n
            else:  # biases and norm parameters are left alone
                assert torch.equal(q, p), n


# ----------------------------------------------------------------------------- Fixup


def test_fixup_zeroes_branch_ends_and_the_head_so_the_output_is_the_bias():
    model = build_model(
        "resnet_lite", (3, 32, 32), 10, init="fixup", activation="relu", seed=2, width=16, depth=3
    )
    blocks = model.residual_blocks
    assert all(torch.count_nonzero(b.conv2.weight) == 0 for b in blocks)
    assert torch.count_nonzero(model.fc.weight) == 0
    X, _ = _data((3, 32, 32), n=4)
    with torch.no_grad():
        assert torch.equal(model(X), model.fc.bias.expand(4, 10))  # = 0: the head is zero
        h = model.stem(model.unsqueeze(X))
        for block in blocks:  # every residual branch outputs 0, so each block is act(shortcut)
            assert torch.count_nonzero(block.branch(h)) == 0
            h = block(h)
    # The other branch convs: He (std √2/√fan_out) scaled by L^(-1/2), L = 3 branches, m = 2.
    w = blocks[0].conv1.weight
    expected = math.sqrt(2.0 / (w.shape[0] * 9)) * 3**-0.5
    assert abs(w.std().item() / expected - 1) < 0.15
    scalars = [p for n, p in model.named_parameters() if p.numel() == 1]
    assert scalars and all(p.item() in (0.0, 1.0) for p in scalars)
    # ... and gradients still reach the head, so training can start.
    loss = get_loss("ce")(model(X), torch.arange(4))
    loss.backward()
    assert model.fc.weight.grad.abs().sum() > 0


def test_fixup_is_only_for_fixup_resnets():
    with pytest.raises(InputError, match="norm must be 'none', got 'batch'"):
        build_model("resnet_lite", (40,), 10, init="fixup", norm="batch")
    with pytest.raises(InputError, match="norm must be 'none', got 'layer'"):
        resnet_lite((40,), 10, norm="layer", fixup=True)
    with pytest.raises(InputError, match="'mlp'"):
        build_model("mlp", (40,), 10, init="fixup")
    with pytest.raises(InputError, match=r"fixup=True.*got resnet_lite\(fixup=False\)"):
        fixup_init(resnet_lite((40,), 10))
    with pytest.raises(InputError, match="got Sequential"):
        fixup_init(mlp(4, 2))


# ----------------------------------------------------------------------------- MetaInit


def test_metainit_lowers_the_gradient_quotient_deterministically_without_touching_the_rng():
    X, y = _data((40,), n=48, seed=5)
    mse = get_loss("mse")
    kw = {"width": 8, "depth": 2, "activation": "relu", "init_scale": 3.0, "seed": 0}
    before = build_model("cnn", (40,), 10, init="scaled", **kw).double()
    # The library's GQ (double backward) is the reference's (forward-over-reverse), in float64.
    ref = _gq_reference(before, mse, X.double(), y)
    assert gradient_quotient(before, mse, (X.double(), y)) == pytest.approx(ref, rel=1e-8)

    state = torch.get_rng_state()
    # 100 of the paper's 500 steps: with its fixed ε the first ~15 steps do not lower GQ here.
    model = build_model(
        "cnn", (40,), 10, init="metainit", loss_fn="mse", init_batch=(X, y), init_steps=100, **kw
    )
    again = build_model(
        "cnn", (40,), 10, init="metainit", loss_fn=mse, init_batch=(X, y), init_steps=100, **kw
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert _same(_params(model), _params(again))
    start = _gq_reference(build_model("cnn", (40,), 10, init="scaled", **kw), mse, X, y)
    after = _gq_reference(model, mse, X, y)
    assert after < 0.5 * start, (start, after)


def test_metainit_trace_and_model_state():
    X, y = _data((40,), n=32, seed=6)
    model = build_model("cnn", (40,), 10, norm="batch", **SMALL)
    model.eval()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    start = gradient_quotient(model, "ce", (X, y))  # the objective MetaInit descends (paper's ε)
    trace = metainit(model, "ce", (X, y), steps=5, seed=0)
    assert len(trace.objective) == 6 and trace.objective[0] == pytest.approx(start, rel=1e-3)
    assert trace.objective[trace.selected] == min(trace.objective)
    assert gradient_quotient(model, "ce", (X, y)) == pytest.approx(min(trace.objective), rel=1e-3)
    assert set(trace.multipliers) == {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert all(v >= 0.01 for v in trace.multipliers.values())
    assert not model.training  # flags and BatchNorm running statistics as they were
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    # max_samples: GQ on a seeded subset of the batch.
    keep = torch.randperm(32, generator=torch.Generator().manual_seed(4))[:16]
    start = gradient_quotient(model, "ce", (X[keep], y[keep]), eps_rel=0.01)
    trace = metainit(model, "ce", (X, y), steps=1, seed=4, max_samples=16, eps_rel=0.01)
    assert trace.objective[0] == pytest.approx(start, rel=1e-3)


def test_meta_inits_default_to_their_papers_settings():
    # MetaInit: Dauphin & Schoenholz 2019, Figure 2 (steps=500, lr=0.1, momentum=0.9, eps=1e-5).
    meta = inspect.signature(metainit).parameters
    assert {k: meta[k].default for k in ("steps", "lr", "momentum", "eps", "eps_rel")} == {
        "steps": 500,
        "lr": 0.1,
        "momentum": 0.9,
        "eps": 1e-5,
        "eps_rel": 0.0,
    }
    # GradInit: zhuchen03/gradinit launch/run_gradinit.sh (390 iterations, ResNet-110 without BN).
    grad_ = inspect.signature(gradinit).parameters
    assert {k: grad_[k].default for k in ("steps", "lr", "eta", "gamma", "min_scale", "grad_clip")} == {
        "steps": 390,
        "lr": 0.05,
        "eta": 0.1,
        "gamma": 1.0,
        "min_scale": 0.01,
        "grad_clip": 1.0,
    }
    # apply_init (so build_model) without init_steps runs them: steps + 1 objective values.
    X, y = _data((40,), n=8, seed=11)
    for init, steps in (("metainit", 500), ("gradinit", 390)):
        trace = apply_init(mlp(40, 10, width=4, depth=0), init, loss_fn="ce", init_batch=(X, y))
        assert len(trace.objective) == steps + 1


# ----------------------------------------------------------------------------- GradInit


def test_gradinit_lowers_the_held_out_post_step_loss_below_the_default_inits():
    X, y = _data((40,), n=64, seed=7)
    ce = get_loss("ce")
    kw = {"width": 16, "depth": 2, "activation": "relu", "seed": 0}
    default = build_model("mlp", (40,), 10, **kw)
    model = build_model("mlp", (40,), 10, **kw)
    trace = gradinit(model, ce, (X, y), steps=20, seed=3)
    # The documented split: S = the first half of a seeded permutation, S̃ (held out) the rest.
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    halves = (X[perm[:32]], y[perm[:32]]), (X[perm[32:]], y[perm[32:]])
    assert trace.objective[0] == pytest.approx(_post_step_loss(default, ce, *halves), rel=1e-5)
    assert trace.objective[-1] == pytest.approx(_post_step_loss(model, ce, *halves), rel=1e-5)
    assert trace.objective[-1] < trace.objective[0]


def test_gradinit_repairs_a_large_init_deterministically_without_touching_the_rng():
    X, y = _data((40,), n=64, seed=7)
    fresh = _data((40,), n=64, seed=8), _data((40,), n=64, seed=9)  # never seen by GradInit
    ce = get_loss("ce")
    kw = {"width": 16, "depth": 2, "activation": "relu", "init_scale": 3.0, "seed": 0}
    state = torch.get_rng_state()
    model = build_model("mlp", (40,), 10, init="gradinit", loss_fn=ce, init_batch=(X, y), init_steps=20, **kw)
    again = build_model(
        "mlp", (40,), 10, init="gradinit", loss_fn="ce", init_batch=(X, y), init_steps=20, **kw
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert _same(_params(model), _params(again))
    large = build_model("mlp", (40,), 10, init="scaled", **kw)
    assert _post_step_loss(model, ce, *fresh) < 0.7 * _post_step_loss(large, ce, *fresh)


def test_gradinit_objective_falls_and_scales_respect_their_bounds():
    X, y = _data((40,), n=40, seed=10)
    model = build_model("cnn", (40,), 10, init="scaled", init_scale=2.0, **SMALL)
    before = _params(model)
    trace = gradinit(model, "mse", (X, y), steps=15, seed=1, batch_size=12)
    assert len(trace.objective) == 16 and trace.selected == 15
    assert trace.objective[-1] < trace.objective[0]
    assert trace.constraint_steps >= 1  # a 2× init starts with ‖g‖ > γ = 1
    for (n, p), p0 in zip(model.named_parameters(), before, strict=True):
        a = trace.multipliers[n]
        assert a >= (0.0 if n.endswith("bias") else 0.01)
        assert torch.allclose(p, a * p0)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"name": "vgg"}, "model: unknown name 'vgg'; valid: cnn, mlp, resnet_lite"),
        ({"norm": "group"}, "unknown norm 'group'; valid: batch, layer, none"),
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"init": "xavier"}, "unknown init 'xavier'; valid: default, fixup, gradinit, metainit, scaled"),
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"name": "cnn", "depth": 0}, "depth must be a positive integer, got 0"),
        ({"depth": -1}, "depth must be a non-negative integer, got -1"),
        ({"n_outputs": 0}, "n_outputs must be a positive integer, got 0"),
        ({"input_shape": (1, 2, 3, 4)}, r"got \(1, 2, 3, 4\)"),
        ({"input_shape": (0,)}, r"got \(0,\)"),
        ({"init": "scaled", "init_scale": -1.0}, "init_scale must be a positive finite number, got -1.0"),
        ({"init_scale": 2.0}, "init_scale=2.0 has no effect with init 'default'"),
        ({"init": "scaled", "init_steps": 5}, "init_steps=5 has no effect with init 'scaled'"),
        ({"init": "metainit"}, "init 'metainit' needs loss_fn and init_batch"),
        ({"init": "metainit", "loss_fn": "ce"}, r"init 'metainit' needs init_batch=\(X, y\), got None"),
        ({"init": "gradinit", "init_batch": _data((40,), n=4)}, "init 'gradinit' needs loss_fn, got None"),
        ({"init": "gradinit", "loss_fn": "ce", "init_batch": _data((40,), n=1)}, "at least 2"),
        ({"init": "metainit", "loss_fn": "hinge", "init_batch": _data((40,), n=4)}, "'hinge'"),
        (
            {"init": "gradinit", "loss_fn": "ce", "init_batch": _data((41,), n=4)},
            r"init_batch X has samples of shape \(41,\), expected input_shape \(40,\)",
        ),
        (
            {"init": "metainit", "loss_fn": "ce", "init_batch": _data((40,), n=4), "init_steps": 0},
            "init_steps must be a positive integer, got 0",
        ),
    ],
)
def test_bad_values_raise_input_error_naming_the_value(kwargs, needle):
    args = {"name": "mlp", "input_shape": (40,), "n_outputs": 10, **kwargs}
    with pytest.raises(InputError, match=needle):
        build_model(args.pop("name"), args.pop("input_shape"), args.pop("n_outputs"), **args)


def test_inits_are_the_config_names():
    assert INITS == ("default", "scaled", "fixup", "metainit", "gradinit")
    assert MODELS == ("mlp", "cnn", "resnet_lite")


@pytest.mark.parametrize(
    "shape,cls",
    [((6, 3), torch.nn.BatchNorm1d), ((6, 3, 5), torch.nn.BatchNorm1d), ((6, 3, 4, 4), torch.nn.BatchNorm2d)],
)
def test_metainit_batch_norm_matches_torch_and_has_third_derivatives(shape, cls):
    """torch 2.14's batch_norm has no third derivative; MetaInit's explicit one must equal it."""
    from landscope.models.init import _explicit_batch_norm

    torch.manual_seed(0)
    bn = cls(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    for training in (True, False):
        bn.train(training)
        ref = torch.nn.functional.batch_norm(
            x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, training, 0.0, bn.eps
        )
        out = _explicit_batch_norm(bn)(x)
        assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    bn.train()
    y = _explicit_batch_norm(bn)(x).pow(3).sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    (h,) = torch.autograd.grad(g.pow(2).sum(), x, create_graph=True)
    (t,) = torch.autograd.grad(h.sum(), x)
    assert torch.isfinite(t).all() and t.abs().sum() > 0


def test_metainit_never_differentiates_torch_batch_norm(monkeypatch):
    """What would have caught torch 2.14 on any version: MetaInit must not call F.batch_norm."""
    import landscope.models.init as init_module

    def refuse(*args, **kwargs):
        raise RuntimeError("batch_norm does not support 3rd+ order derivatives (simulated)")

    X, y = _data((40,), n=16, seed=2)
    model = build_model("cnn", (40,), 10, norm="batch", **SMALL)
    monkeypatch.setattr(torch.nn.functional, "batch_norm", refuse)
    trace = init_module.metainit(model, "ce", (X, y), steps=2, seed=0)
    assert len(trace.objective) == 3
