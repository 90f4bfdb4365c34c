"""Which parameters a curvature operator acts on.

The operator acts on the concatenation of the selected parameters, in the order of
``model.named_parameters()``; the others are held fixed. A selection can be given as names, glob
patterns, modules, parameter tensors, or :func:`layers` (the k-layer approximation of [W&R]).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from landscope.checks import positive_int
from landscope.errors import InputError


@dataclass(frozen=True)
class LayerSelection:
    """The parameters of the first or last ``k`` layers of a model, as names.

    Built by :func:`layers`; pass it as ``params=`` to an operator.
    """

    names: tuple[str, ...]
    layer_names: tuple[str, ...]


def _layer_groups(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Group trainable parameters into layers.

    *Ours*: a layer starts at each module that directly owns a weight of two or more dimensions
    (Linear, Conv, Embedding); modules with only 1-D parameters (BatchNorm, LayerNorm, biases of
    custom modules) join the layer before them, so "the last layer" of ``Linear → BatchNorm`` is the
    pair, as a reader of [W&R] would count it.
    """
    groups: list[tuple[str, list[str]]] = []
    for mod_name, module in model.named_modules():
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        full = [f"{mod_name}.{n}" if mod_name else n for n, _ in own]
        starts_layer = any(p.dim() >= 2 for _, p in own)
        if starts_layer or not groups:
            groups.append((mod_name or "<root>", full))
        else:
            groups[-1][1].extend(full)
    return groups


def layers(model: nn.Module, first: int | None = None, last: int | None = None) -> LayerSelection:
    """Select the parameters of the first ``first`` or the last ``last`` layers of ``model``.

    Exactly one of ``first`` and ``last`` must be given. See :func:`_layer_groups` for what counts
    as a layer.
    """
    if (first is None) == (last is None):
        raise InputError(f"layers() takes exactly one of first= or last=, got first={first}, last={last}")
    groups = _layer_groups(model)
    k = first if first is not None else last
    k = positive_int("layers(): k", k)
    if k > len(groups):
        raise InputError(
            f"layers(): k={k} exceeds the model's {len(groups)} layers ({', '.join(g for g, _ in groups)})"
        )
    chosen = groups[:k] if first is not None else groups[-k:]
    names = tuple(n for _, ns in chosen for n in ns)
    return LayerSelection(names=names, layer_names=tuple(g for g, _ in chosen))


ParamSpec = None | str | nn.Module | torch.Tensor | LayerSelection | Sequence[str | nn.Module | torch.Tensor]


def resolve_params(model: nn.Module, params: ParamSpec = None) -> list[str]:
    """Turn a parameter selection into parameter names, in ``model.named_parameters()`` order.

    ``None`` selects every parameter with ``requires_grad``. A pattern or module that selects
    nothing is an error, so a typo never silently gives the Hessian of zero parameters.
    """
    named = dict(model.named_parameters())
    if not named:
        raise InputError(f"the model {type(model).__name__} has no parameters")
    order = list(named)
    if params is None:
        chosen: set[str] = {n for n, p in named.items() if p.requires_grad}
        if not chosen:
            raise InputError("no parameter of the model requires grad; pass params= explicitly")
        return [n for n in order if n in chosen]
    if isinstance(params, LayerSelection):
        missing = [n for n in params.names if n not in named]
        if missing:
            raise InputError(f"layer selection names parameters the model lacks: {missing}")
        chosen = set(params.names)
        return [n for n in order if n in chosen]
    items: Iterable = [params] if isinstance(params, (str, nn.Module, torch.Tensor)) else params
    by_id = {id(p): n for n, p in named.items()}
    chosen = set()
    for item in items:
        if isinstance(item, str):
            hits = [n for n in order if n == item or fnmatch.fnmatchcase(n, item)]
            if not hits:
                raise InputError(
                    f"params entry {item!r} matches no parameter of the model; "
                    f"its parameters are: {', '.join(order)}"
                )
            chosen.update(hits)
        elif isinstance(item, nn.Module):
            ids = [id(p) for p in item.parameters()]
            hits = [by_id[i] for i in ids if i in by_id]
            if not hits:
                raise InputError(f"params module {type(item).__name__} owns no parameter of the model")
            chosen.update(hits)
        elif isinstance(item, torch.Tensor):
            if id(item) not in by_id:
                raise InputError(
                    f"params tensor of shape {tuple(item.shape)} is not a parameter of the model"
                )
            chosen.add(by_id[id(item)])
        else:
            raise InputError(
                f"params entries must be names, glob patterns, modules or parameters, "
                f"got {type(item).__name__}"
            )
    if not chosen:
        raise InputError("params= selects no parameter")
    return [n for n in order if n in chosen]
