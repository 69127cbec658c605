"""Optimizer states moved into one buffer per kind keep their values, and the optimizer steps as before."""

from __future__ import annotations

import io
import platform

import pytest
import torch

import obliviate.training.compact as compact
from obliviate.training.compact import compact_states, create_adam_states, flat_states_from_first_step


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (11,)]
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]


def _grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g) for p in params]


def _run(make, steps, *, compact_first=False, checkpoint_at=None):
    params = _params()
    opt = make(params)
    if compact_first:
        flat_states_from_first_step(opt)
    for step in range(steps):
        if step == checkpoint_at:
            buf = io.BytesIO()
            torch.save(opt.state_dict(), buf)
            buf.seek(0)
            opt = make(params)
            opt.load_state_dict(torch.load(buf, weights_only=True))
            if compact_first:
                flat_states_from_first_step(opt)
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        opt.step()
    return params, opt


OPTIMIZERS = {
    "adamw-fused": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, fused=True),
    "adamw-foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=True),
    "adamw-loop": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=False),
    "adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_compacted_states_step_exactly_as_separate_ones(name):
    make = OPTIMIZERS[name]
    plain, plain_opt = _run(make, 4)
    lean, lean_opt = _run(make, 4, compact_first=True)
    for a, b in zip(lean, plain):
        assert torch.equal(a, b)
    kinds = {key for p in lean for key, v in lean_opt.state[p].items() if v.dim() > 0}
    assert kinds, "the optimizer kept no per-parameter state"
    for key in kinds:
        storages = {lean_opt.state[p][key].untyped_storage().data_ptr() for p in lean}
        assert len(storages) == 1, f"{key} is not one buffer"
        for p, q in zip(lean, plain):
            assert torch.equal(lean_opt.state[p][key], plain_opt.state[q][key])
    # scalar states (the step count) are left as the optimizer made them
    for p, q in zip(lean, plain):
        for key, v in plain_opt.state[q].items():
            if v.dim() == 0:
                assert type(lean_opt.state[p][key]) is type(v) and lean_opt.state[p][key].dtype == v.dtype


@pytest.mark.parametrize("name", ["adamw-fused", "adamw-foreach", "adamw-loop", "adam-amsgrad"])
def test_adam_states_are_created_as_the_optimizer_would_create_them(name):
    """Same keys, dtypes, devices, shapes, strides and (zero) values as the optimizer's own lazy creation, for
    the parameters that have a gradient; the moments are views of one buffer per kind."""
    make = OPTIMIZERS[name]
    theirs, ours = _params(), _params()
    opt_theirs, opt_ours = make(theirs), make(ours)
    for params in (theirs, ours):
        for p, g in zip(params[:-1], _grads(params, 0)):          # the last one gets no gradient
            p.grad = g
    lr = [g["lr"] for g in opt_theirs.param_groups]
    for g in opt_theirs.param_groups:
        g["lr"] = 0.0
    opt_theirs.step()                                               # creates the states, moves nothing (lr 0)
    for g, v in zip(opt_theirs.param_groups, lr):
        g["lr"] = v
    assert create_adam_states(opt_ours) == len(ours) - 1
    assert not opt_ours.state.get(ours[-1])
    for p, q in zip(ours[:-1], theirs[:-1]):
        a, b = opt_ours.state[p], opt_theirs.state[q]
        assert a.keys() == b.keys()
        for key in a:
            if key == "step":
                assert a[key].dtype == b[key].dtype and a[key].device == b[key].device and a[key].shape == b[key].shape
                assert float(a[key]) == 0.0
            else:
                assert a[key].dtype == b[key].dtype and a[key].stride() == b[key].stride()
                assert not a[key].any()
    for key in ("exp_avg", "exp_avg_sq"):
        assert len({opt_ours.state[p][key].untyped_storage().data_ptr() for p in ours[:-1]}) == 1
    assert create_adam_states(opt_ours) == 0                         # only once
    assert create_adam_states(torch.optim.SGD(ours, lr=0.1, momentum=0.9)) == 0


def test_states_are_flat_from_the_first_step_and_the_hooks_go():
    params = _params()
    opt = OPTIMIZERS["adamw-fused"](params)
    flat_states_from_first_step(opt)
    for p, g in zip(params, _grads(params, 0)):
        p.grad = g
    opt.step()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks, "the hooks must go"
    ptr = opt.state[params[0]]["exp_avg"].untyped_storage().data_ptr()
    assert all(opt.state[p]["exp_avg"].untyped_storage().data_ptr() == ptr for p in params)


def test_resumed_states_are_compacted_and_the_run_continues_as_uninterrupted():
    make = OPTIMIZERS["adamw-fused"]
    straight, _ = _run(make, 5)
    resumed, opt = _run(make, 5, compact_first=True, checkpoint_at=2)
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)
    assert len({opt.state[p]["exp_avg_sq"].untyped_storage().data_ptr() for p in resumed}) == 1


def test_nothing_to_move():
    params = _params()
    opt = torch.optim.AdamW(params)
    assert compact_states(opt) == 0                              # no states yet
    one = [torch.nn.Parameter(torch.ones(3))]
    opt = torch.optim.AdamW(one)
    one[0].grad = torch.ones(3)
    opt.step()
    assert compact_states(opt) == 0                              # a single tensor of each kind
    _, opt = _run(OPTIMIZERS["adamw-loop"], 1)
    assert compact_states(opt) == 2 * 4 * sum(p.numel() for p in _params())
    assert compact_states(opt) == 0                              # already one buffer


def test_non_contiguous_states_stay_where_they_are():
    params = [torch.nn.Parameter(torch.randn(4, 6).t()), torch.nn.Parameter(torch.randn(6, 4).t())]
    opt = torch.optim.AdamW(params, foreach=False)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert not opt.state[params[0]]["exp_avg"].is_contiguous()  # made like its parameter
    assert compact_states(opt) == 0


def test_freed_blocks_are_handed_back_as_the_move_goes(monkeypatch):
    calls = []
    monkeypatch.setattr(compact, "release_free_memory", lambda: calls.append(1) or True)
    _, opt = _run(OPTIMIZERS["adamw-loop"], 1)
    total = 2 * 4 * sum(p.numel() for p in _params())
    assert compact_states(opt, release_every=100) == total
    # one hand-back per 100 bytes moved (checked after each tensor), and one at the end for the rest
    assert 2 <= len(calls) <= total // 100 + 1
    _, opt = _run(OPTIMIZERS["adamw-loop"], 1)
    calls.clear()
    compact_states(opt)
    assert calls == []


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_free_memory_calls_the_c_library():
    assert compact.release_free_memory() is True
