"""Batches of any structure, against independent dense float64 references (curvlinops-style case table).

Every case builds a tiny float64 model, its Hessian set in one of the structures
``HessianOperator`` accepts (``(X, y)`` with tensor / tuple / dict parts, dict batches, lists and
loaders of them, chunked or not) and the way its loss is given (``loss_fn``, ``batch_loss``, the
model's own ``.loss``). The operator's dense matrix, gradient and loss are compared with the
Hessian of the loss *written out by hand* as a function of a flat parameter vector, on a deep copy
of the model (``torch.func.functional_call``) and differentiated by
``torch.autograd.functional.hessian``: nothing in a reference calls landscope.

Each case also checks that building the operator and taking products leaves the user's model alone:
parameters, buffers, ``.grad``, the ``training`` flag of every module (the models are left in a
*mixed* state, train mode with one submodule in eval mode, as inside a training loop) and the RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from reference import assert_same_state, max_rel_err, model_state, reference_copy
from torch import nn
from torch.autograd.functional import hessian, jacobian
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader

import landscope as ls
from landscope.curvature.batches import valid_tokens
from landscope.errors import DataError, InputError

TOL = 1e-10  # max |op − reference| / max |reference|
DT = torch.float64
N = 12  # samples of most cases
C = 3  # classes
V = 5  # vocabulary of the token models
S = 6  # sequence length


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=DT)


def _labels(n: int, seed: int, classes: int = C) -> torch.Tensor:
    y = torch.arange(n) % classes  # every class present
    return y[torch.randperm(n, generator=_gen(seed))]


def _mixed_flags(model: nn.Module) -> nn.Module:
    """Train mode with the last submodule in eval mode: the operator must restore exactly this."""
    model.train()
    list(model.modules())[-1].eval()
    return model


# -- models --------------------------------------------------------------------------------------


def _mlp(n_in: int = 5, n_out: int = C, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 6), nn.Tanh(), nn.Linear(6, n_out)).double()


class TwoInputs(nn.Module):
    """``forward(a, b)``: two input tensors of different widths."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.fa, self.fb, self.head = nn.Linear(4, 5), nn.Linear(3, 5), nn.Linear(5, C)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fa(a) * torch.sigmoid(self.fb(b))))


@dataclass
class Output:
    """A Hugging Face ``ModelOutput`` look-alike: ``.logits`` and an optional ``.loss``."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


class OwnLoss(nn.Module):
    """``forward(x, labels=None)``: computes its own cross-entropy when given labels."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.body = _mlp(seed=3)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        logits = self.body(x)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        if self.as_dict:
            return {"logits": logits} if loss is None else {"loss": loss, "logits": logits}
        return Output(logits=logits, loss=loss)


class Wrapped(nn.Module):
    """An MLP whose output is wrapped: a ``ModelOutput``-like object, a dict or a tuple."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.body = _mlp(seed=4)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.body(x)
        if self.kind == "output":
            return Output(logits=logits, hidden=x)
        if self.kind == "dict":
            return {"logits": logits, "hidden": x}
        return logits, x


class TokenModel(nn.Module):
    """(B, S) token ids → (B, S, V) logits, mixing neighbouring positions with a causal conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.emb = nn.Embedding(V, 4)
        self.mix = nn.Conv1d(4, 4, kernel_size=2)
        self.head = nn.Linear(4, V)
        self.double()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids).transpose(1, 2)  # (B, 4, S)
        h = torch.tanh(self.mix(F.pad(h, (1, 0))))  # causal: pad on the left
        return self.head(h.transpose(1, 2))  # (B, S, V)


class ConvPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.net = nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(2, 2, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * 2 * 2, C),
        ).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyUNet(nn.Module):
    """Down conv (stride 2), up by ConvTranspose and by bilinear up-sampling, skip concat, 1×1 head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.enc = nn.Conv2d(1, 2, 3, padding=1)
        self.down = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(3, 2, 2, stride=2)
        self.head = nn.Conv2d(2 + 3 + 2, C, 1)
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = torch.tanh(self.enc(x))  # (B, 2, 8, 8)
        d = torch.tanh(self.down(skip))  # (B, 3, 4, 4)
        u = torch.tanh(self.up(d))  # (B, 2, 8, 8)
        i = F.interpolate(d, scale_factor=2, mode="bilinear", align_corners=False)  # (B, 3, 8, 8)
        return self.head(torch.cat([u, i, skip], dim=1))  # (B, C, 8, 8)


class Tied(nn.Module):
    """Embedding shared with the output layer (weight tying, as in GPT-2)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.emb = nn.Embedding(V, 4)
        self.mid = nn.Linear(4, 4)
        self.out = nn.Linear(4, V)
        self.out.weight = self.emb.weight
        self.double()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mid(self.emb(ids))))


def _tied_logits(p: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """``Tied`` written out by hand: the one matrix ``W`` embeds and projects back."""
    W = p["emb.weight"]
    h = torch.tanh(W[ids] @ p["mid.weight"].T + p["mid.bias"])
    return h @ W.T + p["out.bias"]


class CausalEncoder(nn.Module):
    """One ``nn.TransformerEncoderLayer`` with a causal mask and ``is_causal=True``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(9)
        self.emb = nn.Embedding(V, 8)
        self.layer = nn.TransformerEncoderLayer(
            d_model=8, nhead=2, dim_feedforward=12, dropout=0.1, batch_first=True
        )
        self.head = nn.Linear(8, V)
        self.double()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1], dtype=DT)
        return self.head(self.layer(self.emb(ids), src_mask=mask, is_causal=True))


class TinyGPT(nn.Module):
    """Hand-written causal attention on ``F.scaled_dot_product_attention``, Hugging Face calling style.

    ``forward(input_ids, attention_mask=None, labels=None)``: ``is_causal=True`` without a mask,
    otherwise a boolean mask combining causality and key padding; with labels, the shifted token
    cross-entropy over the labels that are not -100, returned as ``.loss``.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(10)
        self.emb = nn.Embedding(V, 4)
        self.pos = nn.Parameter(0.3 * torch.randn(S, 4))
        self.qkv = nn.Linear(4, 12)
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, V)
        self.double()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Output:
        B, L = input_ids.shape
        h = self.emb(input_ids) + self.pos[:L]
        q, k, v = self.qkv(h).reshape(B, L, 3, 2, 2).permute(2, 0, 3, 1, 4)  # (B, heads, L, 2) each
        if attention_mask is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            causal = torch.ones(L, L, dtype=torch.bool).tril()
            mask = causal[None, None] & attention_mask.bool()[:, None, None, :]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.proj(a.transpose(1, 2).reshape(B, L, 4))
        logits = self.head(torch.tanh(h))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return Output(logits=logits, loss=loss)


class BNModel(nn.Module):
    """``forward(x, labels=None)`` with BatchNorm: train mode normalises with the chunk's statistics."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.fc1, self.bn, self.fc2 = nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Linear(6, C)
        self.double()
        g = _gen(12)
        with torch.no_grad():  # non-trivial affine parameters and running statistics
            self.bn.weight.copy_(1.0 + 0.3 * torch.randn(6, generator=g, dtype=DT))
            self.bn.bias.copy_(0.2 * torch.randn(6, generator=g, dtype=DT))
            self.bn.running_mean.copy_(0.3 * torch.randn(6, generator=g, dtype=DT))
            self.bn.running_var.copy_(0.5 + torch.rand(6, generator=g, dtype=DT))
            self.bn.num_batches_tracked.fill_(7)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Output:
        logits = self.fc2(torch.tanh(self.bn(self.fc1(x))))
        return Output(logits=logits, loss=None if labels is None else F.cross_entropy(logits, labels))


# -- the case table --------------------------------------------------------------------------------

Fwd = Callable[..., Any]  # the reference copy, called with the parameters substituted
RefLoss = Callable[[Fwd, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class Case:
    """A model, its data and loss as the operator gets them, and the loss the reference differentiates.

    ``ref_loss(fwd, p)`` is the loss whose Hessian the operator must be, written out by hand:
    ``fwd(*args, **kwargs)`` calls the reference copy at the parameters ``p`` (name → tensor).
    """

    model: nn.Module
    data: Any
    ref_loss: RefLoss
    kwargs: dict = field(default_factory=dict)  # loss_fn / batch_loss / batch_weight / chunk_size / …
    params: list[str] | None = None
    mode: str = "eval"  # of the reference copy
    reduction: str = "mean"  # op.loss_reduction
    tol: float = TOL


def _xy(n_in: int = 5, seed: int = 1, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    return _randn(n, n_in, seed=seed), _labels(n, seed + 100)


def _multilabel(n: int, seed: int) -> torch.Tensor:
    return (torch.rand(n, C, generator=_gen(seed)) < 0.5).to(DT)


# 1. losses ----------------------------------------------------------------------------------------


def case_ce_mean() -> Case:
    X, y = _xy()
    return Case(_mlp(), (X, y), lambda f, p: F.cross_entropy(f(X), y), kwargs={"loss_fn": F.cross_entropy})


def case_ce_sum() -> Case:
    """A sum is recognised and divided by the samples: the Hessian of the mean cross-entropy."""
    X, y = _xy()
    return Case(
        _mlp(),
        (X, y),
        lambda f, p: F.cross_entropy(f(X), y),
        kwargs={"loss_fn": nn.CrossEntropyLoss(reduction="sum")},
        reduction="sum",
    )


def case_ce_sum_chunked() -> Case:
    """Sum-reduced chunks of 5, 5 and 2 samples: each divided by its own count, weighted by it."""
    X, y = _xy()
    return Case(
        _mlp(),
        (X, y),
        lambda f, p: F.cross_entropy(f(X), y),
        kwargs={"loss_fn": lambda o, t: F.cross_entropy(o, t, reduction="sum"), "chunk_size": 5},
        reduction="sum",
    )


def case_ce_label_smoothing() -> Case:
    X, y = _xy()
    return Case(
        _mlp(),
        (X, y),
        lambda f, p: F.cross_entropy(f(X), y, label_smoothing=0.1),
        kwargs={"loss_fn": nn.CrossEntropyLoss(label_smoothing=0.1)},
    )


def case_ce_soft_targets() -> Case:
    X = _randn(N, 5, seed=1)
    y = torch.softmax(_randn(N, C, seed=2), dim=1)
    return Case(
        _mlp(),
        (X, y),
        lambda f, p: -(y * torch.log_softmax(f(X), 1)).sum(1).mean(),
        kwargs={"loss_fn": F.cross_entropy},
    )


def case_bce_mean() -> Case:
    X, y = _randn(N, 5, seed=1), _multilabel(N, 2)

    def ref(f, p):
        z = f(X)
        return (-(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z))).mean()

    return Case(_mlp(), (X, y), ref, kwargs={"loss_fn": F.binary_cross_entropy_with_logits})


def case_bce_sum() -> Case:
    """Sum over the C outputs and the samples, divided by the samples: C × the element mean."""
    X, y = _randn(N, 5, seed=1), _multilabel(N, 2)

    def ref(f, p):
        z = f(X)
        return (-(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z))).sum() / N

    return Case(
        _mlp(), (X, y), ref, kwargs={"loss_fn": nn.BCEWithLogitsLoss(reduction="sum")}, reduction="sum"
    )


def case_mse_mean() -> Case:
    X, y = _randn(N, 5, seed=1), _randn(N, C, seed=2)
    return Case(_mlp(), (X, y), lambda f, p: ((f(X) - y) ** 2).mean(), kwargs={"loss_fn": F.mse_loss})


def case_mse_sum() -> Case:
    X, y = _randn(N, 5, seed=1), _randn(N, C, seed=2)
    return Case(
        _mlp(),
        (X, y),
        lambda f, p: ((f(X) - y) ** 2).sum() / N,
        kwargs={"loss_fn": nn.MSELoss(reduction="sum")},
        reduction="sum",
    )


def case_mse_regression_sum() -> Case:
    """One output: the sum divided by the samples is exactly ``reduction='mean'``."""
    X, y = _randn(N, 5, seed=1), _randn(N, 1, seed=2)
    return Case(
        _mlp(n_out=1),
        (X, y),
        lambda f, p: F.mse_loss(f(X), y),
        kwargs={"loss_fn": lambda o, t: F.mse_loss(o, t, reduction="sum")},
        reduction="sum",
    )


# 2. structures ------------------------------------------------------------------------------------


def case_dict_inputs() -> Case:
    Xa, Xb, y = _randn(N, 4, seed=1), _randn(N, 3, seed=2), _labels(N, 3)
    return Case(
        TwoInputs().double(),
        ({"a": Xa, "b": Xb}, y),
        lambda f, p: F.cross_entropy(f(a=Xa, b=Xb), y),
        kwargs={"loss_fn": F.cross_entropy},
    )


def case_dict_inputs_reversed_keys() -> Case:
    """Keyword order differs from the signature's: the dict is passed as keywords, not positions."""
    Xa, Xb, y = _randn(N, 4, seed=1), _randn(N, 3, seed=2), _labels(N, 3)
    return Case(
        TwoInputs().double(),
        ({"b": Xb, "a": Xa}, y),
        lambda f, p: F.cross_entropy(f(a=Xa, b=Xb), y),
        kwargs={"loss_fn": F.cross_entropy},
    )


def case_tuple_inputs() -> Case:
    Xa, Xb, y = _randn(N, 4, seed=1), _randn(N, 3, seed=2), _labels(N, 3)
    return Case(
        TwoInputs().double(),
        ((Xa, Xb), y),
        lambda f, p: F.cross_entropy(f(Xa, Xb), y),
        kwargs={"loss_fn": F.cross_entropy},
    )


def _two_heads(out: torch.Tensor, cls: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out[:, :C], cls) + 0.5 * ((out[:, C] - reg) ** 2).mean()


def case_tuple_targets_batch_loss() -> Case:
    X, cls, reg = _randn(N, 5, seed=1), _labels(N, 2), _randn(N, seed=3)

    def batch_loss(model, batch):
        x, (c, r) = batch
        return _two_heads(model(x), c, r)

    return Case(
        _mlp(n_out=C + 1),
        (X, (cls, reg)),
        lambda f, p: _two_heads(f(X), cls, reg),
        kwargs={"batch_loss": batch_loss},
    )


def case_tuple_targets_loss_fn() -> Case:
    X, cls, reg = _randn(N, 5, seed=1), _labels(N, 2), _randn(N, seed=3)
    return Case(
        _mlp(n_out=C + 1),
        (X, (cls, reg)),
        lambda f, p: _two_heads(f(X), cls, reg),
        kwargs={"loss_fn": lambda o, t: _two_heads(o, *t)},
    )


def case_dict_targets_loss_fn() -> Case:
    X, cls, reg = _randn(N, 5, seed=1), _labels(N, 2), _randn(N, seed=3)
    return Case(
        _mlp(n_out=C + 1),
        (X, {"cls": cls, "reg": reg}),
        lambda f, p: _two_heads(f(X), cls, reg),
        kwargs={"loss_fn": lambda o, t: _two_heads(o, t["cls"], t["reg"])},
    )


def case_dict_batch_batch_loss() -> Case:
    """A plain dict batch, a model returning ``{"logits": …}``, the loss from ``batch_loss``."""
    X, y = _xy()
    return Case(
        Wrapped("dict"),
        {"x": X, "labels": y},
        lambda f, p: F.cross_entropy(f(X)["logits"], y),
        kwargs={"batch_loss": lambda m, b: F.cross_entropy(m(b["x"])["logits"], b["labels"])},
    )


def case_dict_output_loss_fn() -> Case:
    X, y = _xy()
    return Case(
        Wrapped("dict"),
        (X, y),
        lambda f, p: F.cross_entropy(f(X)["logits"], y),
        kwargs={"loss_fn": F.cross_entropy},
    )


def case_model_output_loss_fn() -> Case:
    X, y = _xy()
    return Case(
        Wrapped("output"),
        (X, y),
        lambda f, p: F.cross_entropy(f(X).logits, y),
        kwargs={"loss_fn": F.cross_entropy},
    )


def case_model_output_sum() -> Case:
    """The sum check and the per-sample division read the logits of a ``ModelOutput``."""
    X, y = _xy()
    return Case(
        Wrapped("output"),
        (X, y),
        lambda f, p: F.cross_entropy(f(X).logits, y),
        kwargs={"loss_fn": nn.CrossEntropyLoss(reduction="sum")},
        reduction="sum",
    )


def case_tuple_output_loss_fn() -> Case:
    X, y = _xy()
    return Case(
        Wrapped("tuple"),
        (X, y),
        lambda f, p: F.cross_entropy(f(X)[0], y),
        kwargs={"loss_fn": F.cross_entropy},
    )


def case_own_loss_dict_batch() -> Case:
    """No loss_fn, no batch_loss: ``model(**batch).loss``."""
    X, y = _xy()
    return Case(OwnLoss(), {"x": X, "labels": y}, lambda f, p: F.cross_entropy(f(x=X).logits, y))


def case_own_loss_dict_output() -> Case:
    """The model returns a dict with ``"loss"``."""
    X, y = _xy()
    return Case(
        OwnLoss(as_dict=True), {"x": X, "labels": y}, lambda f, p: F.cross_entropy(f(x=X)["logits"], y)
    )


def case_own_loss_list_of_dict_batches() -> Case:
    """Batches of 3, 4 and 5 samples: weighted by samples, the mean over all 12."""
    X, y = _xy()
    data = [{"x": X[a:b], "labels": y[a:b]} for a, b in ((0, 3), (3, 7), (7, 12))]
    return Case(OwnLoss(), data, lambda f, p: F.cross_entropy(f(x=X).logits, y))


def case_own_loss_dict_batch_chunked() -> Case:
    X, y = _xy()
    return Case(
        OwnLoss(),
        {"x": X, "labels": y},
        lambda f, p: F.cross_entropy(f(x=X).logits, y),
        kwargs={"chunk_size": 5},
    )


def case_own_loss_dataloader() -> Case:
    """A DataLoader(shuffle=False) over dict samples: default collation makes dict batches of 5, 5, 2."""
    X, y = _xy()
    samples = [{"x": X[i], "labels": y[i]} for i in range(N)]
    return Case(
        OwnLoss(),
        DataLoader(samples, batch_size=5, shuffle=False),
        lambda f, p: F.cross_entropy(f(x=X).logits, y),
    )


def case_list_of_dict_input_pairs() -> Case:
    Xa, Xb, y = _randn(N, 4, seed=1), _randn(N, 3, seed=2), _labels(N, 3)
    data = [({"a": Xa[a:b], "b": Xb[a:b]}, y[a:b]) for a, b in ((0, 5), (5, 12))]
    return Case(
        TwoInputs().double(),
        data,
        lambda f, p: F.cross_entropy(f(a=Xa, b=Xb), y),
        kwargs={"loss_fn": F.cross_entropy},
    )


# 3. sequence outputs ------------------------------------------------------------------------------


def _tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, V, (n, S), generator=_gen(seed))


def _token_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _token_ce_ignore(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100)


def _by_hand_token_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens whose label is not -100 of −log softmax(logits)[label]."""
    logp = torch.log_softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
    y = y.reshape(-1)
    keep = y != -100
    return -logp[keep].gather(1, y[keep, None]).sum() / keep.sum()


def case_sequence_token_ce() -> Case:
    ids, y = _tokens(4, 1), _tokens(4, 2)
    return Case(
        TokenModel(), (ids, y), lambda f, p: _by_hand_token_ce(f(ids), y), kwargs={"loss_fn": _token_ce}
    )


def case_sequence_token_ce_class_dim() -> Case:
    """``F.cross_entropy`` on (B, V, S) logits and (B, S) targets."""
    ids, y = _tokens(4, 1), _tokens(4, 2)
    return Case(
        TokenModel(),
        (ids, y),
        lambda f, p: _by_hand_token_ce(f(ids), y),
        kwargs={"loss_fn": lambda o, t: F.cross_entropy(o.transpose(1, 2), t)},
    )


def case_sequence_token_ce_sum() -> Case:
    """Summed over the tokens, divided by the sequences: S × the token mean."""
    ids, y = _tokens(4, 1), _tokens(4, 2)
    return Case(
        TokenModel(),
        (ids, y),
        lambda f, p: S * _by_hand_token_ce(f(ids), y),
        kwargs={"loss_fn": lambda o, t: F.cross_entropy(o.reshape(-1, V), t.reshape(-1), reduction="sum")},
        reduction="sum",
    )


# 4. architectures ---------------------------------------------------------------------------------


def case_conv_pool() -> Case:
    X, y = _randn(6, 1, 8, 8, seed=1), _labels(6, 2)
    return Case(
        ConvPool(), (X, y), lambda f, p: F.cross_entropy(f(X), y), kwargs={"loss_fn": F.cross_entropy}
    )


def case_unet_segmentation() -> Case:
    X, y = _randn(3, 1, 8, 8, seed=1), torch.randint(0, C, (3, 8, 8), generator=_gen(2))

    def ref(f, p):
        logp = torch.log_softmax(f(X), dim=1)  # (B, C, 8, 8)
        return -logp.gather(1, y[:, None]).mean()

    return Case(TinyUNet(), (X, y), ref, kwargs={"loss_fn": F.cross_entropy})


def case_weight_tying() -> Case:
    ids, y = _tokens(4, 1), _tokens(4, 2)
    return Case(
        Tied(),
        (ids, y),
        lambda f, p: _by_hand_token_ce(_tied_logits(p, ids), y),
        kwargs={"loss_fn": _token_ce},
    )


def case_layernorm() -> Case:
    torch.manual_seed(13)
    model = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, C)).double()
    with torch.no_grad():
        model[1].weight.add_(0.3 * _randn(6, seed=14))
        model[1].bias.add_(0.2 * _randn(6, seed=15))
    X, y = _xy()

    def ref(f, p):
        h = X @ p["0.weight"].T + p["0.bias"]
        h = (h - h.mean(1, keepdim=True)) / torch.sqrt(h.var(1, unbiased=False, keepdim=True) + 1e-5)
        h = torch.tanh(h * p["1.weight"] + p["1.bias"])
        return F.cross_entropy(h @ p["3.weight"].T + p["3.bias"], y)

    return Case(model, (X, y), ref, kwargs={"loss_fn": F.cross_entropy})


ENCODER_PARAMS = ["layer.self_attn.in_proj_weight", "layer.self_attn.out_proj.bias", "head.weight"]


def case_causal_encoder_layer() -> Case:
    ids, y = _tokens(3, 1), _tokens(3, 2)
    return Case(
        CausalEncoder(),
        (ids, y),
        lambda f, p: _by_hand_token_ce(f(ids), y),
        kwargs={"loss_fn": _token_ce},
        params=ENCODER_PARAMS,
    )


def case_causal_sdpa_is_causal() -> Case:
    ids, y = _tokens(4, 1), _tokens(4, 2)
    return Case(
        TinyGPT(), (ids, y), lambda f, p: _by_hand_token_ce(f(ids).logits, y), kwargs={"loss_fn": _token_ce}
    )


GPT_PARAMS = ["qkv.weight", "proj.bias", "head.weight"]  # 72 of 154: keeps the uncached list case fast


def _padded_lm_batch(n: int, lengths: list[int], seed: int) -> dict[str, torch.Tensor]:
    """Right-padded sequences: labels −100 and attention mask 0 beyond each length."""
    ids = _tokens(n, seed)
    pos = torch.arange(S)[None]
    keep = pos < torch.tensor(lengths)[:, None]
    return {
        "input_ids": torch.where(keep, ids, 0),
        "attention_mask": keep.long(),
        "labels": torch.where(keep, ids, -100),
    }


def _shifted_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return _by_hand_token_ce(logits[:, :-1], labels[:, 1:])


def case_causal_sdpa_padding_mask() -> Case:
    """A Hugging Face-style causal LM: dict batch, attention mask, shifted labels, its own ``.loss``."""
    b = _padded_lm_batch(4, [6, 4, 3, 5], seed=3)
    return Case(
        TinyGPT(), b, lambda f, p: _shifted_ce(f(b["input_ids"], b["attention_mask"]).logits, b["labels"])
    )


# 5. padding: valid tokens over chunks -------------------------------------------------------------

LENGTHS = [[6, 6, 6, 6], [2, 3, 1, 4], [6, 5, 1, 2]]  # 24, 10 and 14 valid tokens


def _padded_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i, lengths in enumerate(LENGTHS):
        ids, y = _tokens(4, 20 + i), _tokens(4, 30 + i)
        y = torch.where(torch.arange(S)[None] < torch.tensor(lengths)[:, None], y, -100)
        out.append((ids, y))
    return out


def _cat_pairs(pairs):
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def case_padding_list_valid_tokens() -> Case:
    pairs = _padded_pairs()
    ids, y = _cat_pairs(pairs)
    return Case(
        TokenModel(),
        pairs,
        lambda f, p: _by_hand_token_ce(f(ids), y),
        kwargs={"loss_fn": _token_ce_ignore, "batch_weight": valid_tokens()},
        tol=1e-9,
    )


def case_padding_list_with_empty_batch() -> Case:
    """A batch without valid tokens in the middle weighs 0: it is left out (its mean is 0/0)."""
    pairs = _padded_pairs()
    ids, y = _cat_pairs(pairs)
    empty = (_tokens(4, 40), torch.full((4, S), -100))
    return Case(
        TokenModel(),
        [pairs[0], empty, *pairs[1:]],
        lambda f, p: _by_hand_token_ce(f(ids), y),
        kwargs={"loss_fn": _token_ce_ignore, "batch_weight": valid_tokens(), "cache": True},
        tol=1e-9,
    )


def case_padding_chunk_size_valid_tokens() -> Case:
    ids, y = _cat_pairs(_padded_pairs())
    return Case(
        TokenModel(),
        (ids, y),
        lambda f, p: _by_hand_token_ce(f(ids), y),
        kwargs={"loss_fn": _token_ce_ignore, "batch_weight": valid_tokens(), "chunk_size": 4, "cache": True},
        tol=1e-9,
    )


def case_padding_hf_lm_shifted() -> Case:
    """Dict batches of a causal LM, ``valid_tokens(shift=True)``: the mean over all shifted labels."""
    batches = [_padded_lm_batch(4, lengths, seed=50 + i) for i, lengths in enumerate(LENGTHS)]
    every = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    return Case(
        TinyGPT(),
        batches,
        lambda f, p: _shifted_ce(f(every["input_ids"], every["attention_mask"]).logits, every["labels"]),
        kwargs={"batch_weight": valid_tokens(shift=True)},
        params=GPT_PARAMS,
        tol=1e-9,
    )


# 6. a regulariser in the loss closure -------------------------------------------------------------


def _regularised(select: list[str] | None) -> Case:
    model = _mlp()
    X, y = _xy()

    def loss_fn(out, t):
        return F.cross_entropy(out, t) + 0.3 * sum((q**2).sum() for q in model.parameters())

    return Case(
        model,
        (X, y),
        lambda f, p: F.cross_entropy(f(X), y) + 0.3 * sum((q**2).sum() for q in p.values()),
        kwargs={"loss_fn": loss_fn},
        params=select,
    )


def case_regulariser_in_closure() -> Case:
    return _regularised(None)


def case_regulariser_in_closure_one_layer() -> Case:
    return _regularised(["2.weight"])


def case_regulariser_in_batch_loss() -> Case:
    X, y = _xy()

    def batch_loss(model, batch):
        return F.cross_entropy(model(batch[0]), batch[1]) + 0.3 * sum(
            (q**2).sum() for q in model.parameters()
        )

    return Case(
        _mlp(),
        (X, y),
        lambda f, p: F.cross_entropy(f(X), y) + 0.3 * sum((q**2).sum() for q in p.values()),
        kwargs={"batch_loss": batch_loss},
    )


# 7. train-mode BatchNorm with dict batches ---------------------------------------------------------


def case_batchnorm_train_dict() -> Case:
    X, y = _xy()
    return Case(
        BNModel(),
        {"x": X, "labels": y},
        lambda f, p: F.cross_entropy(f(X).logits, y),
        kwargs={"model_mode": "train"},
        mode="train",
    )


def case_batchnorm_train_dict_chunked() -> Case:
    """Chunks of 5, 5 and 2: batch statistics of each chunk, weighted by samples."""
    X, y = _xy()

    def ref(f, p):
        return sum(
            (b - a) / N * F.cross_entropy(f(X[a:b]).logits, y[a:b]) for a, b in ((0, 5), (5, 10), (10, 12))
        )

    return Case(
        BNModel(), {"x": X, "labels": y}, ref, kwargs={"model_mode": "train", "chunk_size": 5}, mode="train"
    )


def case_batchnorm_eval_dict() -> Case:
    X, y = _xy()
    return Case(BNModel(), {"x": X, "labels": y}, lambda f, p: F.cross_entropy(f(X).logits, y))


CASES: dict[str, Callable[[], Case]] = {
    name.removeprefix("case_").replace("_", "-"): fn
    for name, fn in dict(globals()).items()
    if name.startswith("case_")
}


# -- the reference -------------------------------------------------------------------------------


def reference(case: Case) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Hessian, gradient and value of ``case.ref_loss`` w.r.t. the flat selected parameters.

    On a deep copy in ``case.mode`` (``reference.reference_copy``), through
    ``torch.autograd.functional`` under the attention math kernel (the fused ones have no double
    backward).
    """
    m = reference_copy(case.model, case.mode)
    named = {n: t.detach() for n, t in m.named_parameters()}
    buffers = {n: b.detach() for n, b in m.named_buffers()}
    names = case.params or list(named)
    shapes = [named[n].shape for n in names]
    numels = [named[n].numel() for n in names]
    theta0 = torch.cat([named[n].reshape(-1) for n in names]).clone()

    def f(theta: torch.Tensor) -> torch.Tensor:
        p = dict(named)
        p.update({n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, numels), shapes, strict=True)})

        def fwd(*args, **kwargs):
            return functional_call(m, {**p, **buffers}, args, kwargs)

        return case.ref_loss(fwd, p)

    with sdpa_kernel([SDPBackend.MATH]):
        H = hessian(f, theta0)
        g = jacobian(f, theta0)
        value = float(f(theta0))
    return H, g, value


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_hessian_matches_the_reference(name):
    case = CASES[name]()
    model = _mixed_flags(case.model)
    before = model_state(model)
    op = ls.HessianOperator(model, data=case.data, params=case.params, **case.kwargs)
    H = op.to_dense()
    g, loss = op.gradient(), op.loss()
    assert_same_state(before, model)
    H_ref, g_ref, loss_ref = reference(case)
    assert H_ref.abs().max() > 1e-3  # guards the table: a zero reference would match anything
    assert op.loss_reduction == case.reduction
    assert H.shape == H_ref.shape and H.dtype == DT
    assert max_rel_err(H, H_ref) <= case.tol
    assert max_rel_err(g, g_ref) <= case.tol
    assert abs(loss - loss_ref) <= case.tol * abs(loss_ref)
    assert_same_state(before, model)


def test_dataloader_leaves_the_global_rng_alone():
    X, y = _xy()
    loader = DataLoader([{"x": X[i], "labels": y[i]} for i in range(N)], batch_size=5, shuffle=False)
    model = OwnLoss()
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    op = ls.HessianOperator(model, data=loader)
    op.matvec(torch.ones(op.dim, dtype=DT))
    assert torch.equal(before, torch.get_rng_state())


def test_weight_tying_counts_the_shared_matrix_once():
    model = Tied()
    op = ls.HessianOperator(model, _token_ce, (_tokens(4, 1), _tokens(4, 2)))
    assert op.names == ["emb.weight", "mid.weight", "mid.bias", "out.bias"]
    assert op.dim == V * 4 + 4 * 4 + 4 + V


def test_regulariser_adds_its_hessian():
    """The closure's 0.3‖θ‖² contributes exactly 0.6·I (it is differentiated, not held fixed)."""
    case = case_regulariser_in_closure()
    H = ls.HessianOperator(case.model, data=case.data, **case.kwargs).to_dense()
    X, y = case.data
    plain = Case(case.model, case.data, lambda f, p: F.cross_entropy(f(X), y))
    H_plain, _, _ = reference(plain)
    assert max_rel_err(H - H_plain, 0.6 * torch.eye(H.shape[0], dtype=DT)) <= TOL


# 5. the default weight (samples) is not the mean over valid tokens ------------------------------


@pytest.mark.parametrize(
    "name", ["padding-list-valid-tokens", "padding-chunk-size-valid-tokens", "padding-hf-lm-shifted"]
)
def test_padding_needs_valid_token_weights(name):
    """Weighted by samples, chunks with fewer valid tokens count too much: not the mean over tokens."""
    case = CASES[name]()
    kwargs = {**{k: v for k, v in case.kwargs.items() if k != "batch_weight"}, "cache": True}
    H = ls.HessianOperator(case.model, data=case.data, params=case.params, **kwargs).to_dense()
    H_ref, _, _ = reference(case)
    assert max_rel_err(H, H_ref) > 1e-3


def test_padding_chunks_differ_in_valid_tokens():
    """Guards the padding cases: the chunks really hold different numbers of valid tokens."""
    weigh = valid_tokens()
    assert [weigh(p) for p in _padded_pairs()] == [24.0, 10.0, 14.0]
    shifted = valid_tokens(shift=True)
    assert [shifted(_padded_lm_batch(4, lengths, 0)) for lengths in LENGTHS] == [20.0, 6.0, 10.0]


# -- GGN with structured batches -----------------------------------------------------------------


@dataclass
class GGNCase:
    model: nn.Module
    data: Any
    loss_fn: Callable
    outputs: Callable[[Fwd], torch.Tensor]  # the reference model's outputs the loss reads
    loss_of: Callable[[torch.Tensor], torch.Tensor]  # the mean loss of those outputs
    reduction: str = "mean"


def ggn_dict_inputs() -> GGNCase:
    Xa, Xb, y = _randn(N, 4, seed=1), _randn(N, 3, seed=2), _labels(N, 3)
    return GGNCase(
        TwoInputs().double(),
        ({"a": Xa, "b": Xb}, y),
        F.cross_entropy,
        lambda f: f(a=Xa, b=Xb),
        lambda o: F.cross_entropy(o, y),
    )


def ggn_model_output_sum() -> GGNCase:
    X, y = _xy()
    return GGNCase(
        Wrapped("output"),
        (X, y),
        nn.CrossEntropyLoss(reduction="sum"),
        lambda f: f(X).logits,
        lambda o: F.cross_entropy(o, y),
        reduction="sum",
    )


def ggn_tuple_targets() -> GGNCase:
    X, cls, reg = _randn(N, 5, seed=1), _labels(N, 2), _randn(N, seed=3)
    return GGNCase(
        _mlp(n_out=C + 1),
        (X, (cls, reg)),
        lambda o, t: _two_heads(o, *t),
        lambda f: f(X),
        lambda o: _two_heads(o, cls, reg),
    )


def ggn_sequence_padding_list() -> GGNCase:
    pairs = _padded_pairs()
    ids, y = _cat_pairs(pairs)
    return GGNCase(TokenModel(), pairs, _token_ce_ignore, lambda f: f(ids), lambda o: _by_hand_token_ce(o, y))


GGN_CASES = {
    name.removeprefix("ggn_").replace("_", "-"): fn
    for name, fn in dict(globals()).items()
    if name.startswith("ggn_")
}


def reference_ggn(case: GGNCase) -> torch.Tensor:
    """``Jᵀ H_L J`` of the whole Hessian set at once (a sum of per-sample blocks: chunking-free)."""
    m = reference_copy(case.model, "eval")
    named = {n: t.detach() for n, t in m.named_parameters()}
    names = list(named)
    shapes = [named[n].shape for n in names]
    numels = [named[n].numel() for n in names]
    theta0 = torch.cat([named[n].reshape(-1) for n in names])

    def outputs(theta):
        p = {n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, numels), shapes, strict=True)}
        return case.outputs(lambda *a, **k: functional_call(m, p, a, k))

    out = outputs(theta0).detach()
    J = jacobian(outputs, theta0).reshape(out.numel(), -1)
    HL = hessian(lambda o: case.loss_of(o.reshape(out.shape)), out.reshape(-1))
    return J.T @ HL @ J


@pytest.mark.parametrize("name", list(GGN_CASES))
def test_ggn_matches_the_reference(name):
    case = GGN_CASES[name]()
    model = _mixed_flags(case.model)
    before = model_state(model)
    kwargs = {"batch_weight": valid_tokens()} if name.startswith("sequence-padding") else {}
    op = ls.GGNOperator(model, case.loss_fn, case.data, cache=True, **kwargs)
    G = op.to_dense()
    assert_same_state(before, model)
    assert op.loss_reduction == case.reduction
    assert max_rel_err(G, reference_ggn(case)) <= 1e-9


# 8. low precision and the mean-reduction check ----------------------------------------------------


def test_bf16_mean_loss_passes_the_reduction_check():
    """bf16 rounds the doubled-batch ratio to ~1e-2: a mean CE must not be taken for anything else."""
    model = _mlp(seed=20)
    X, y = _xy(n=32)
    H_ref, _, _ = reference(Case(model, (X, y), lambda f, p: F.cross_entropy(f(X), y)))
    model = model.to(torch.bfloat16)
    op = ls.HessianOperator(model, F.cross_entropy, (X.to(torch.bfloat16), y))
    assert op.loss_reduction == "mean" and op.dtype == torch.bfloat16
    H = op.to_dense()
    assert torch.isfinite(H).all()
    # bf16 arithmetic (8 bits of mantissa) on a bf16 copy of the parameters: a loose match
    assert max_rel_err(H, H_ref) <= 0.05


def test_bf16_sum_loss_is_recognised():
    model = _mlp(seed=20).to(torch.bfloat16)
    X, y = _xy(n=32)
    op = ls.HessianOperator(model, nn.CrossEntropyLoss(reduction="sum"), (X.to(torch.bfloat16), y))
    assert op.loss_reduction == "sum"


def test_float32_loss_neither_mean_nor_sum_is_refused():
    model = _mlp().float()
    X, y = _xy()
    with pytest.raises(InputError, match=r"1\.414×"):  # √2 on the batch repeated twice
        ls.HessianOperator(model, lambda o, t: F.cross_entropy(o, t) * o.shape[0] ** 0.5, (X.float(), y))


# 9. bad input: one clear error, naming the value --------------------------------------------------


def _mlp_xy():
    X, y = _xy()
    return _mlp(), X, y


def test_loss_fn_with_a_dict_batch():
    X, y = _xy()
    with pytest.raises(DataError, match=r"must be a pair \(X, y\).*got a dict"):
        ls.HessianOperator(OwnLoss(), F.cross_entropy, {"x": X, "labels": y})


def test_no_loss_with_tensor_pairs():
    model, X, y = _mlp_xy()
    with pytest.raises(InputError, match=r"no loss_fn or batch_loss .* the batches are tuple"):
        ls.HessianOperator(model, data=(X, y))


def test_dict_batch_without_labels_and_an_output_without_loss():
    X, _ = _xy()
    with pytest.raises(InputError, match=r"has no \.loss.*'labels'"):
        ls.HessianOperator(OwnLoss(), data={"x": X})  # Output(loss=None)
    for kind in ("dict", "tuple"):  # a dict without "loss", a tuple: no loss anywhere
        with pytest.raises(InputError, match=r"has no \.loss"):
            ls.HessianOperator(Wrapped(kind), data={"x": X})


def test_batch_loss_returning_per_sample_losses():
    model, X, y = _mlp_xy()
    with pytest.raises(InputError, match=rf"batch_loss must return a scalar.*got \({N},\)"):
        ls.HessianOperator(
            model, data=(X, y), batch_loss=lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none")
        )


def test_batch_loss_not_callable():
    model, X, y = _mlp_xy()
    with pytest.raises(InputError, match="batch_loss must be callable.*got str"):
        ls.HessianOperator(model, data=(X, y), batch_loss="ce")


def test_batch_weight_not_callable():
    model, X, y = _mlp_xy()
    with pytest.raises(InputError, match="batch_weight must be callable.*got int"):
        ls.HessianOperator(model, F.cross_entropy, (X, y), batch_weight=3)


@pytest.mark.parametrize(("weight", "shown"), [(-1.0, r"-1\.0"), (math.nan, "nan"), (math.inf, "inf")])
def test_batch_weight_negative_or_not_finite(weight, shown):
    model, X, y = _mlp_xy()
    with pytest.raises(InputError, match=rf"batch_weight returned {shown} for chunk 0"):
        ls.HessianOperator(model, F.cross_entropy, (X, y), batch_weight=lambda b: weight)


def test_batch_weight_names_the_chunk():
    model, X, y = _mlp_xy()
    data = [(X[:4], y[:4]), (X[4:], y[4:])]
    with pytest.raises(InputError, match=r"returned -4\.0 for chunk 1"):
        ls.HessianOperator(model, F.cross_entropy, data, batch_weight=lambda b: 4.0 - len(b[0]))


def test_batch_weight_returning_a_non_number():
    model, X, y = _mlp_xy()
    with pytest.raises(InputError, match="batch_weight failed on chunk 0"):
        ls.HessianOperator(model, F.cross_entropy, (X, y), batch_weight=lambda b: "many")


def test_all_weights_zero():
    ids = _tokens(4, 1)
    with pytest.raises(DataError, match="weights sum to 0"):
        ls.HessianOperator(
            TokenModel(), _token_ce_ignore, [(ids, torch.full((4, S), -100))] * 2, batch_weight=valid_tokens()
        )


def _valid_tokens_without_the_key():
    X, y = _xy()
    ls.HessianOperator(
        OwnLoss(),
        data={"x": X, "y": y},
        batch_loss=lambda m, b: F.cross_entropy(m(b["x"]).logits, b["y"]),
        batch_weight=valid_tokens(),
    )


def test_valid_tokens_without_the_key():
    with pytest.raises(DataError, match=r"no 'labels' entry \(keys: \['x', 'y'\]\); pass key="):
        _valid_tokens_without_the_key()


def test_valid_tokens_error_reaches_the_user_unchanged():
    with pytest.raises(DataError) as info:
        _valid_tokens_without_the_key()
    assert "must return a number" not in str(info.value)


def test_loss_fn_and_batch_loss_together():
    model, X, y = _mlp_xy()
    with pytest.raises(InputError, match="not both"):
        ls.HessianOperator(
            model, F.cross_entropy, (X, y), batch_loss=lambda m, b: F.cross_entropy(m(b[0]), b[1])
        )


def test_ggn_with_batch_loss():
    model, X, y = _mlp_xy()
    with pytest.raises(InputError, match="GGNOperator needs loss_fn"):
        ls.GGNOperator(model, data=(X, y), batch_loss=lambda m, b: F.cross_entropy(m(b[0]), b[1]))


def test_ggn_without_any_loss():
    X, y = _xy()
    with pytest.raises(InputError, match="GGNOperator needs loss_fn"):
        ls.GGNOperator(OwnLoss(), data={"x": X, "labels": y})


@pytest.mark.parametrize(
    "data", [{"x": [1.0, 2.0], "labels": "cat"}, {}], ids=["dict-of-lists", "empty-dict"]
)
def test_batch_without_tensors(data):
    with pytest.raises(DataError, match="data has no tensors.*got dict"):
        ls.HessianOperator(OwnLoss(), data=data)


def test_batch_without_tensors_in_a_list():
    X, y = _xy()
    with pytest.raises(DataError, match="data batch 1 has no tensors"):
        ls.HessianOperator(OwnLoss(), data=[{"x": X, "labels": y}, {"x": "nothing"}])


def test_nan_in_a_dict_batch_names_the_key():
    X, y = _xy()
    X[3, 2] = math.nan
    with pytest.raises(DataError, match=r"batch\['x'\] contains NaN or inf \(first at index \[3, 2\]\)"):
        ls.HessianOperator(OwnLoss(), data={"x": X, "labels": y})


def test_nan_in_a_list_of_dict_batches_names_batch_and_key():
    X, y = _xy()
    X2 = X.clone()
    X2[1, 0] = math.inf
    with pytest.raises(DataError, match=r"data batch 1: batch\['x'\] contains NaN or inf"):
        ls.HessianOperator(OwnLoss(), data=[{"x": X, "labels": y}, {"x": X2, "labels": y}])


def test_nan_in_dict_inputs_names_the_path():
    Xa, Xb, y = _randn(N, 4, seed=1), _randn(N, 3, seed=2), _labels(N, 3)
    Xb[0, 1] = math.nan
    with pytest.raises(DataError, match=r"X\['b'\] contains NaN"):
        ls.HessianOperator(TwoInputs().double(), F.cross_entropy, ({"a": Xa, "b": Xb}, y))


def test_nan_in_tuple_targets_names_the_path():
    X, cls, reg = _randn(N, 5, seed=1), _labels(N, 2), _randn(N, seed=3)
    reg[5] = math.nan
    with pytest.raises(DataError, match=r"y\[1\] contains NaN"):
        ls.HessianOperator(_mlp(n_out=C + 1), lambda o, t: _two_heads(o, *t), (X, (cls, reg)))
