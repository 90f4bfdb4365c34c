"""landscope.checks: the shared argument checks, their exact messages, and that they are the one home."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import landscope as ls
from landscope.checks import int_at_least, is_tensor_pair, positive_int, tensor_pair
from landscope.errors import DataError, InputError, LandscopeError

SRC = Path(__file__).resolve().parents[1] / "src" / "landscope"

# -- positive_int -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, kwargs, expected",
    [
        (1, {}, 1),
        (3, {}, 3),
        (10**12, {}, 10**12),
        (np.int64(3), {}, 3),
        (np.int32(7), {}, 7),
        (np.uint8(2), {}, 2),
        (5, {"allow_none": True}, 5),
        (None, {"allow_none": True}, None),
        (np.int64(4), {"allow_none": True, "what": "anything"}, 4),
    ],
)
def test_positive_int_accepts(value, kwargs, expected):
    got = positive_int("n", value, **kwargs)
    assert got == expected
    assert type(got) is type(expected)  # NumPy integers come back as int


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (0, {}, "n must be a positive integer, got 0"),
        (-1, {}, "n must be a positive integer, got -1"),
        (True, {}, "n must be a positive integer, got True"),
        (False, {}, "n must be a positive integer, got False"),
        (1.5, {}, "n must be a positive integer, got 1.5"),
        (2.0, {}, "n must be a positive integer, got 2.0"),
        ("3", {}, "n must be a positive integer, got '3'"),
        (None, {}, "n must be a positive integer, got None"),
        (np.int64(0), {}, f"n must be a positive integer, got {np.int64(0)!r}"),
        (np.float64(3.0), {}, f"n must be a positive integer, got {np.float64(3.0)!r}"),
        (torch.tensor(3), {}, "n must be a positive integer, got tensor(3)"),
        (0, {"allow_none": True}, "n must be a positive integer or None, got 0"),
        (True, {"allow_none": True}, "n must be a positive integer or None, got True"),
        ("3", {"allow_none": True}, "n must be a positive integer or None, got '3'"),
        (
            0,
            {"what": "steps between measurements"},
            "n must be a positive integer (steps between measurements), got 0",
        ),
        (
            -2,
            {"what": "rows per chunk", "allow_none": True},
            "n must be a positive integer or None (rows per chunk), got -2",
        ),
    ],
)
def test_positive_int_refuses_with_the_exact_message(value, kwargs, message):
    with pytest.raises(InputError) as info:
        positive_int("n", value, **kwargs)
    assert str(info.value) == message
    assert type(info.value) is InputError


@pytest.mark.parametrize(
    "value, minimum, expected",
    [(0, 0, 0), (1, 1, 1), (np.int64(5), 2, 5), (2, 2, 2), (-3, -3, -3)],
)
def test_int_at_least_accepts(value, minimum, expected):
    got = int_at_least("n", value, minimum)
    assert got == expected and type(got) is int


@pytest.mark.parametrize(
    "value, minimum, message",
    [
        (0, 1, "n must be a positive integer, got 0"),
        (-1, 0, "n must be a non-negative integer, got -1"),
        (1, 2, "n must be an integer >= 2, got 1"),
        (True, 0, "n must be a non-negative integer, got True"),
        (2.0, 2, "n must be an integer >= 2, got 2.0"),
        (None, 0, "n must be a non-negative integer, got None"),
    ],
)
def test_int_at_least_refuses_with_the_exact_message(value, minimum, message):
    with pytest.raises(DataError) as info:
        int_at_least("n", value, minimum, error=DataError)
    assert str(info.value) == message


def test_positive_int_raises_the_given_error_type():
    with pytest.raises(DataError) as info:
        positive_int("loader: n_train", 0, error=DataError)
    assert str(info.value) == "loader: n_train must be a positive integer, got 0"
    assert isinstance(info.value, LandscopeError) and isinstance(info.value, ValueError)


# The converted sites keep their messages byte for byte (the strings below are the ones the
# hand-written checks produced before they moved to landscope.checks).


def _tiny_op():
    return ls.DenseOperator(torch.eye(4, dtype=torch.float64))


def _check_options(**kw):
    from landscope.monitor.monitor import check_options

    args = {"every": 1, "k": 1, "tol": 0.1, "edge": 0.9, "name": "sharpness"} | kw
    return check_options(**args)


def _lr_finder_check(**kw):
    from landscope.monitor.lr_finder import _check

    args = {
        "model": nn.Linear(2, 1),
        "rule": "curvature",
        "early_steps": 5,
        "probe_steps": None,
        "steps": None,
        "warmup_steps": 10,
    } | kw
    return _check(**args)


def _init_steps(steps):
    from landscope.models.init import _check_steps

    return _check_steps(steps, "metainit")


def _init_batch(batch):
    from landscope.models.init import _check_batch

    return _check_batch(batch, nn.Linear(2, 1), "gradinit")


def _train_data(data):
    from landscope.training.trainer import _check_data

    return _check_data("train_data", data)


def _seeds(seeds):
    from landscope.experiments.registry import check_seeds

    return check_seeds(seeds)


def _mnist1d(**kw):
    from landscope.data.mnist1d import load_mnist1d

    return load_mnist1d(**kw, cache=False)


def _resnet(**kw):
    from landscope.models.resnet import resnet_lite

    return resnet_lite((1, 8), **({"out_features": 2} | kw))


def _hessian_set(chunk_size):
    from landscope.curvature.batches import HessianSet

    return HessianSet((torch.zeros(4, 2), torch.zeros(4)), chunk_size=chunk_size)


def _check_k(k):
    from landscope.curvature.ritz import check_k

    return check_k(k, 10)


SITES = [
    (lambda: _init_steps(0), InputError, "init 'metainit': init_steps must be a positive integer, got 0"),
    (lambda: _resnet(width=0), InputError, "resnet_lite: width must be a positive integer, got 0"),
    (lambda: _resnet(stages=True), InputError, "resnet_lite: stages must be a positive integer, got True"),
    (
        lambda: _resnet(blocks_per_stage=1.0),
        InputError,
        "resnet_lite: blocks_per_stage must be a positive integer, got 1.0",
    ),
    (
        lambda: _resnet(out_features=-1),
        InputError,
        "resnet_lite: out_features must be a positive integer, got -1",
    ),
    (
        lambda: _seeds(0),
        InputError,
        "seeds must be a positive integer (how many seeds each experiment runs), got 0",
    ),
    (lambda: _mnist1d(n_train=0), DataError, "mnist1d: n_train must be a positive integer, got 0"),
    (lambda: _mnist1d(n_test=True), DataError, "mnist1d: n_test must be a positive integer, got True"),
    (
        lambda: _check_options(every=0),
        InputError,
        "every must be a positive integer (optimizer steps between measurements), got 0",
    ),
    (
        lambda: _check_options(k=True),
        InputError,
        "k must be a positive integer (top eigenvalues to track), got True",
    ),
    (lambda: _lr_finder_check(early_steps=0), InputError, "early_steps must be a positive integer, got 0"),
    (
        lambda: _lr_finder_check(warmup_steps=2.5),
        InputError,
        "warmup_steps must be a positive integer, got 2.5",
    ),
    (
        lambda: ls.layers(nn.Linear(2, 1), first=0),
        InputError,
        "layers(): k must be a positive integer, got 0",
    ),
    (lambda: _hessian_set(0), DataError, "chunk_size must be a positive integer or None, got 0"),
    (lambda: ls.EigenTracker(k=0), InputError, "EigenTracker: k must be a positive integer, got 0"),
    (
        lambda: ls.spectral_density(_tiny_op(), n_probes=0),
        InputError,
        "n_probes must be a positive integer, got 0",
    ),
    (
        lambda: ls.spectral_density(_tiny_op(), n_steps=-1),
        InputError,
        "n_steps must be a positive integer, got -1",
    ),
    (
        lambda: ls.hutchinson_trace(_tiny_op(), batch=True),
        InputError,
        "batch must be a positive integer, got True",
    ),
    (
        lambda: ls.MatvecOperator(lambda v: v, dim=0),
        InputError,
        "MatvecOperator.dim must be a positive integer, got 0",
    ),
    (lambda: _check_k(1.5), InputError, "k must be a positive integer, got 1.5"),
    (lambda: _train_data(5), InputError, "train_data must be a tuple (X, y) of tensors, got int"),
    (
        lambda: _train_data((torch.zeros(2),)),
        InputError,
        "train_data must be a tuple (X, y) of tensors, got tuple",
    ),
    (
        lambda: _init_batch([torch.zeros(2, 2), [0, 1]]),
        InputError,
        "init 'gradinit': init_batch must be a tuple (X, y) of tensors, got list",
    ),
]


@pytest.mark.parametrize("call, error, message", SITES, ids=[m for _, _, m in SITES])
def test_converted_sites_keep_their_messages(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message
    assert type(info.value) is error


def test_converted_sites_take_numpy_integers_as_int():
    assert _check_k(np.int64(3)) == 3 and type(_check_k(np.int64(3))) is int
    assert ls.MatvecOperator(lambda v: v, dim=np.int64(3)).dim == 3
    assert _seeds(np.int64(2)) == 2 and type(_seeds(np.int64(2))) is int


# -- tensor_pair --------------------------------------------------------------------------------

X, Y = torch.zeros(3, 2), torch.zeros(3)


@pytest.mark.parametrize("data", [(X, Y), [X, Y]])
def test_tensor_pair_accepts_a_tuple_or_list_of_two_tensors(data):
    assert is_tensor_pair(data)
    got = tensor_pair("data", data)
    assert type(got) is tuple and got[0] is X and got[1] is Y


@pytest.mark.parametrize(
    "data, got",
    [
        (X, "Tensor"),
        ((X,), "tuple"),
        ((X, Y, Y), "tuple"),
        ((X, [0, 1, 2]), "tuple"),
        (((X,), Y), "tuple"),
        ({"X": X, "y": Y}, "dict"),
        ("Xy", "str"),
        (None, "NoneType"),
    ],
)
def test_tensor_pair_refuses_with_the_exact_message(data, got):
    assert not is_tensor_pair(data)
    with pytest.raises(InputError) as info:
        tensor_pair("test_data", data)
    assert str(info.value) == f"test_data must be a tuple (X, y) of tensors, got {got}"


# -- one home -----------------------------------------------------------------------------------

# Hand-written copies left on purpose: (file under src/landscope, a fragment of its line) → why.
# Each differs from positive_int in what it accepts, so converting it would change behaviour.
LEFT: dict[tuple[str, str], str] = {
    ("training/trainer.py", '"steps must be a positive integer'): "accepts True (no bool check)",
    ("training/schedules.py", "schedule: total_steps must be"): "accepts True (no bool check)",
    ("models/init.py", "metainit: max_samples must be"): "accepts True (no bool check)",
    ("models/init.py", "gradinit: batch_size must be"): "accepts True (no bool check)",
    ("models/mlp.py", "mlp: {name} must be"): "accepts True (no bool check)",
    ("models/cnn.py", "cnn: {name} must be"): "accepts True (no bool check)",
    ("background.py", "threads must be"): "accepts True (no bool check)",
    ("monitor/lr_finder.py", "hessian_samples must be"): "also accepts 'auto'; its own message",
}
LITERAL = "must be a positive integer"


def _occurrences() -> list[tuple[str, str]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line in path.read_text().splitlines():
            if LITERAL in line:
                out.append((rel, line.strip()))
    return out


def test_the_message_has_one_home():
    occurrences = _occurrences()
    assert any(rel == "checks.py" for rel, _ in occurrences)  # the scan sees the package
    stray = [
        f"{rel}: {line}"
        for rel, line in occurrences
        if rel != "checks.py" and not any(rel == f and frag in line for f, frag in LEFT)
    ]
    assert not stray, (
        "hand-written positive-integer checks; use landscope.checks.positive_int:\n" + "\n".join(stray)
    )


def test_the_allow_list_has_no_stale_entries():
    occurrences = _occurrences()
    stale = [k for k in LEFT if not any(rel == k[0] and k[1] in line for rel, line in occurrences)]
    assert not stale, f"converted or gone, remove from LEFT: {stale}"


def test_checks_imports_only_errors_of_landscope():
    text = (SRC / "checks.py").read_text()
    assert set(re.findall(r"^(?:from|import) (landscope\S*)", text, flags=re.M)) == {"landscope.errors"}
