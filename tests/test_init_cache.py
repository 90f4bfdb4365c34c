"""The on-disk cache of meta-initialised parameters in ``build_run`` (``$LANDSCOPE_CACHE/init``).

A hit must give bitwise the state dict a fresh init gives and skip the init; anything the init
depends on must miss; a bad file is recomputed with a warning; ``LANDSCOPE_CACHE=off`` disables it;
files appear under their final name only by an atomic rename of a temporary file.
"""

from __future__ import annotations

import os

import pytest
import torch

import landscope as ls
import landscope.models.init as init_mod
from landscope.training import build_run, parse_config
from landscope.training import run as run_mod


def _config(**over):
    cfg = {
        "seed": 0,
        "data": {"name": "src", "n_train": 64, "n_test": 32},
        "model": {
            "name": "mlp",
            "width": 4,
            "depth": 1,
            "activation": "tanh",
            "init": "metainit",
            "init_steps": 5,
        },
        "loss": "ce",
        "optimizer": {"name": "gd", "lr": 0.1},
        "train": {"steps": 6},
        "measure": {"every": 3, "k": 1},
        "device": "cpu",
    }
    for k, v in over.items():
        if isinstance(v, dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return parse_config(cfg)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "init"


@pytest.fixture
def calls(monkeypatch):
    """How many times each meta-init ran."""
    n = {"metainit": 0, "gradinit": 0}

    def counting(name):
        original = getattr(init_mod, name)

        def wrapper(*a, **kw):
            n[name] += 1
            return original(*a, **kw)

        return wrapper

    for name in n:
        monkeypatch.setattr(init_mod, name, counting(name))
    return n


def _state(cfg):
    return build_run(cfg)[0].state_dict()


def _same(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("init", ["metainit", "gradinit"])
def test_hit_is_bitwise_the_fresh_init_and_does_not_recompute(init, cache, calls, monkeypatch):
    cfg = _config(model={"init": init})
    first = _state(cfg)
    assert calls[init] == 1 and len(list(cache.glob(f"{init}-*.pt"))) == 1
    model, _, _ = build_run(cfg)
    assert calls[init] == 1  # served from the cache
    assert _same(model.state_dict(), first) and model.training
    assert all(p.requires_grad for p in model.parameters())
    monkeypatch.setenv("LANDSCOPE_CACHE", "off")
    assert _same(_state(cfg), first) and calls[init] == 2  # the uncached init gives the same bits
    default = _state(_config(model={"init": "default", "init_steps": None}))
    assert not _same(default, first)  # the init did change the parameters


def test_everything_the_init_depends_on_misses(cache, calls):
    _state(_config())
    variants = [
        _config(seed=1),
        _config(data={"n_train": 80}),
        _config(data={"seed": 3}),
        _config(model={"init_steps": 6}),
        _config(model={"width": 5}),
        _config(model={"init_scale": 2.0}),
        _config(loss="mse"),
        _config(dtype="float64"),
    ]
    for i, cfg in enumerate(variants, start=2):
        _state(cfg)
        assert calls["metainit"] == i, cfg
    assert len(list(cache.glob("metainit-*.pt"))) == len(variants) + 1
    # The learning rate, the schedule, the training length and the measurements do not matter.
    _state(_config(optimizer={"lr": 0.5}, train={"steps": 9}, measure={"every": 1, "k": 2}))
    assert calls["metainit"] == len(variants) + 1


def test_key_covers_the_batch_threads_and_versions():
    cfg = _config()
    ds = run_mod.build_dataset(cfg)
    batch = (ds.X_train[:8], ds.y_train[:8])
    key = run_mod.init_cache_key(cfg, ds.input_shape, 10, batch)
    assert key == run_mod.init_cache_key(cfg, ds.input_shape, 10, (batch[0].clone(), batch[1].clone()))
    other = run_mod.init_cache_key(cfg, ds.input_shape, 10, (batch[0] + 1e-7, batch[1]))
    assert other["init_batch"] != key["init_batch"]  # a dataset override is keyed by its data
    assert key["init_steps"] == 5 and key["versions"]["torch"] == str(torch.__version__)
    assert (
        run_mod.init_cache_key(_config(model={"init_steps": None}), ds.input_shape, 10, batch)["init_steps"]
        == init_mod.METAINIT_STEPS
    )
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(old + 1)
        assert run_mod.init_cache_key(cfg, ds.input_shape, 10, batch)["compute"]["threads"] == old + 1
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other_key", "pickle"])
def test_a_bad_cache_file_is_recomputed_with_a_warning(damage, cache, calls, tmp_path):
    cfg = _config()
    first = _state(cfg)
    (path,) = cache.glob("metainit-*.pt")
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other_key":  # a well-formed entry of another run under this name
        blob = torch.load(path, weights_only=True)
        torch.save({"key": {**blob["key"], "seed": 99}, "state": blob["state"]}, path)
    else:  # a pickle that would run code if loaded without weights_only
        import pickle

        marker = tmp_path / "pwned"
        path.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=2))
    with pytest.warns(RuntimeWarning, match="ignoring init cache file"):
        again = _state(cfg)
    assert calls["metainit"] == 2 and _same(again, first)
    assert not (tmp_path / "pwned").exists()
    _state(cfg)  # the recomputed entry replaced the bad one
    assert calls["metainit"] == 2


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_cached_state_of_another_dtype_is_refused(cache, calls):
    cfg = _config()
    first = _state(cfg)
    (path,) = cache.glob("metainit-*.pt")
    blob = torch.load(path, weights_only=True)
    name = next(iter(blob["state"]))
    blob["state"][name] = blob["state"][name].double()  # load_state_dict would cast it silently
    torch.save(blob, path)
    with pytest.warns(RuntimeWarning, match="do not match"):
        assert _same(_state(cfg), first)
    assert calls["metainit"] == 2


@pytest.mark.parametrize("off", ["off", "OFF", "0", "none"])
def test_the_off_switch(off, tmp_path, monkeypatch, calls):
    monkeypatch.setenv("LANDSCOPE_CACHE", off)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert run_mod.init_cache_dir() is None
    monkeypatch.chdir(tmp_path)
    first, second = _state(_config()), _state(_config())
    assert calls["metainit"] == 2 and _same(first, second)
    assert not any(tmp_path.rglob("*.pt"))


def test_default_folder_and_non_meta_inits(tmp_path, monkeypatch):
    monkeypatch.delenv("LANDSCOPE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert run_mod.init_cache_dir() == tmp_path / ".cache" / "landscope" / "init"
    monkeypatch.setenv("LANDSCOPE_CACHE", str(tmp_path / "c"))
    assert run_mod.init_cache_dir() == tmp_path / "c" / "init"
    _state(_config(model={"init": "scaled", "init_scale": 2.0, "init_steps": None}))
    assert not (tmp_path / "c").exists()  # only the meta-inits are cached


def test_write_is_an_atomic_rename_of_a_temporary_file(cache, monkeypatch):
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        src, dst = os.fspath(src), os.fspath(dst)
        assert os.path.exists(src) and not os.path.exists(dst)  # nothing under the final name yet
        renames.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(run_mod.os, "replace", replace)
    _state(_config())
    ((src, dst),) = renames
    (final,) = cache.glob("metainit-*.pt")
    assert dst == str(final) and src != dst and os.path.dirname(src) == str(cache)
    assert os.path.basename(src).startswith(".") and src.endswith(".tmp")  # never matches *.pt
    assert sorted(p.name for p in cache.iterdir()) == [final.name]  # no temporary left behind


def test_a_failed_write_leaves_nothing_and_the_run_goes_on(cache, monkeypatch):
    def broken_save(obj, f, *a, **kw):
        f.write(b"half")
        raise OSError("disk full")

    with monkeypatch.context() as mp:
        mp.setattr(run_mod.torch, "save", broken_save)
        with pytest.warns(RuntimeWarning, match="could not write init cache file"):
            model, _, _ = build_run(_config())
    assert model is not None and list(cache.iterdir()) == []
    # A cache folder that cannot be created: warned, not fatal.
    blocker = cache.parent.parent / "file"
    blocker.write_text("")
    monkeypatch.setenv("LANDSCOPE_CACHE", str(blocker))
    with pytest.warns(RuntimeWarning, match="could not write"):
        build_run(_config())


def test_training_metrics_are_identical_cold_warm_and_uncached(cache, monkeypatch, tmp_path, calls):
    cfg = _config()
    cold = ls.train(cfg, tmp_path / "cold", progress=False)
    warm = ls.train(cfg, tmp_path / "warm", progress=False)
    assert calls["metainit"] == 1
    monkeypatch.setenv("LANDSCOPE_CACHE", "off")
    ls.train(cfg, tmp_path / "off", progress=False)
    assert calls["metainit"] == 2 and cold.state == warm.state == "completed"
    ref = (tmp_path / "off" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "cold" / "metrics.jsonl").read_bytes() == ref
    assert (tmp_path / "warm" / "metrics.jsonl").read_bytes() == ref
