"""Parameter subsets: each selection's operator is the matching sub-block of the full Hessian."""

from __future__ import annotations

import pytest
import torch
from reference import max_rel_err, names_to_index

import landscope as ls

TOL = 1e-10


def _block(H: torch.Tensor, model, names) -> torch.Tensor:
    idx = names_to_index(model, names)
    return H[idx][:, idx]


def _selections(case):
    """``(label, params=, expected names)`` for every documented way of selecting parameters."""
    m = case.model
    named = dict(m.named_parameters())
    first_name = case.names[0]
    last_w, last_b = case.last_layer
    mod_first = m.get_submodule(first_name.rsplit(".", 1)[0])
    return [
        ("name", first_name, [first_name]),
        ("names", [case.names[1], last_w], [case.names[1], last_w]),
        ("glob", case.glob, list(case.glob_names)),
        ("glob-bias", "*.bias", [n for n in case.names if n.endswith(".bias")]),
        ("module", mod_first, [n for n in case.names if n.startswith(first_name.rsplit(".", 1)[0] + ".")]),
        (
            "modules",
            [mod_first, m.get_submodule(last_w.rsplit(".", 1)[0])],
            [
                n
                for n in case.names
                if n.rsplit(".", 1)[0] in (first_name.rsplit(".", 1)[0], last_w.rsplit(".", 1)[0])
            ],
        ),
        ("tensor", named[last_b], [last_b]),
        ("tensors", [named[last_b], named[first_name]], [first_name, last_b]),
        ("mixed", [case.glob, named[last_b]], sorted({*case.glob_names, last_b}, key=case.names.index)),
        ("last=1", ls.layers(m, last=1), list(case.last_layer)),
        ("first=1", ls.layers(m, first=1), list(case.first_layer)),
    ]


def test_layers_names(case):
    assert ls.layers(case.model, last=1).names == case.last_layer
    assert ls.layers(case.model, first=1).names == case.first_layer
    n_layers = 2 if case.name == "mlp" else 3
    assert ls.layers(case.model, last=n_layers).names == tuple(case.names)
    assert ls.layers(case.model, first=n_layers).names == tuple(case.names)


def test_subset_operator_is_sub_block(case, loss_fn, dense_H):
    for label, params, expected in _selections(case):
        op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y), params=params)
        assert op.names == expected, label
        assert op.dim == sum(dict(case.model.named_parameters())[n].numel() for n in expected)
        block = _block(dense_H, case.model, expected)
        D = op.to_dense()
        assert max_rel_err(D, block, ref=dense_H) <= TOL, label


def test_subset_vector_layout_matches_parameter_order(mlp_case, ce, mlp_ce_H):
    """Selection order does not matter: entries follow model.named_parameters()."""
    m = mlp_case.model
    a = ls.HessianOperator(m, ce, (mlp_case.X, mlp_case.y), params=["2.bias", "0.weight"])
    b = ls.HessianOperator(m, ce, (mlp_case.X, mlp_case.y), params=["0.weight", "2.bias"])
    assert a.names == b.names == ["0.weight", "2.bias"]
    assert torch.equal(a.to_dense(), b.to_dense())
    assert max_rel_err(a.to_dense(), _block(mlp_ce_H, m, a.names), ref=mlp_ce_H) <= TOL


def test_subset_ggn_and_train_mode(cnn_case, ce):
    from reference import dense_ggn, dense_hessian

    c = cnn_case
    sel = ls.layers(c.model, first=1)
    G = dense_ggn(c.model, ce, c.X, c.y, names=sel.names)
    op = ls.GGNOperator(c.model, ce, (c.X, c.y), params=sel)
    assert max_rel_err(op.to_dense(), G) <= TOL
    H = dense_hessian(c.model, ce, c.X, c.y, names=sel.names, mode="train")
    op = ls.HessianOperator(c.model, ce, (c.X, c.y), params=sel, model_mode="train")
    assert max_rel_err(op.to_dense(), H) <= TOL


def test_frozen_parameters_are_skipped_by_default(mlp_case, ce, mlp_ce_H):
    m = mlp_case.model
    m[0].weight.requires_grad_(False)
    op = ls.HessianOperator(m, ce, (mlp_case.X, mlp_case.y))
    assert op.names == ["0.bias", "2.weight", "2.bias"]
    assert max_rel_err(op.to_dense(), _block(mlp_ce_H, m, op.names), ref=mlp_ce_H) <= TOL


def test_subset_eigenpairs_are_eigenpairs_of_the_block(case, loss_fn, dense_H):
    # MSE last-layer blocks are Kronecker products with the identity: repeated eigenvalues.
    sel = ls.layers(case.model, last=1)
    op = ls.HessianOperator(case.model, loss_fn, (case.X, case.y), params=sel)
    block = _block(dense_H, case.model, sel.names)
    ref = torch.linalg.eigvalsh(block).flip(0)[:2]
    res = ls.eigenpairs(op, k=2, check_multiplicity=True)
    assert torch.allclose(res.values, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("spec", ["nope", "3.*", ["0.weight", "0.wieght"]])
def test_selection_matching_nothing_is_an_error(mlp_case, ce, spec):
    bad = spec if isinstance(spec, str) else spec[1]
    with pytest.raises(ls.InputError, match=bad.replace("*", r"\*").replace(".", r"\.")):
        ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y), params=spec)


def test_foreign_module_and_tensor_rejected(mlp_case, ce):
    other = torch.nn.Linear(2, 2).double()
    with pytest.raises(ls.InputError, match="Linear"):
        ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y), params=other)
    with pytest.raises(ls.InputError, match=r"\(2, 2\)"):
        ls.HessianOperator(mlp_case.model, ce, (mlp_case.X, mlp_case.y), params=other.weight)


@pytest.mark.parametrize("kw", [dict(first=0), dict(last=4), dict(first=1, last=1), dict()])
def test_layers_bad_arguments(mlp_case, kw):
    with pytest.raises(ls.InputError, match="first|last|k"):
        ls.layers(mlp_case.model, **kw)
    if kw.get("last") == 4:
        with pytest.raises(ls.InputError, match="k=4"):
            ls.layers(mlp_case.model, **kw)
