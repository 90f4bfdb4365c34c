"""Issue 7's acceptance: the eigensolver's extra memory is ≤ (basis size + 4) × dim floats, measured.

``eigenpairs(method="lanczos", max_basis=m)`` runs in a fresh subprocess on a matrix-free diagonal
operator of dim 3,000,000 in float64 (a matvec allocates only its output: one vector), so the
process's resident memory is the solver's. Peak RSS growth over the solve is read from the kernel
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``) and cross-checked by a thread
sampling ``/proc/self/statm`` every 0.5 ms. ``MALLOC_MMAP_THRESHOLD_`` pins glibc's threshold so
every vector-sized block is its own mapping, returned to the kernel when freed: RSS then counts
live tensors, not blocks glibc keeps for reuse (without it the same solve reads ~9 vectors more).

"floats" are float64 elements, the basis dtype. The bound counts the solver's working memory; with
``return_vectors=True`` the ``k`` returned eigenvectors (the result, which the caller keeps) are
added to it, as ``lanczos.py``'s docstring states its memory: basis plus the ``k`` vectors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

DIM, MAX_BASIS, K = 3_000_000, 12, 4

SCRIPT = textwrap.dedent(r"""
    import json, os, resource, sys, threading, time
    import torch
    torch.set_num_threads(1)
    from landscope.curvature import DiagonalOperator, eigenpairs

    DIM, MAX_BASIS, K = map(int, sys.argv[1:4])
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def hwm():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))

    def peak_growth(fn):
        '''Peak RSS above the RSS before fn() (bytes): kernel high-water mark and sampled.'''
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := current RSS
        base, peak, done = rss(), [0], threading.Event()
        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.0005)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        out = fn()
        done.set()
        t.join()
        return {"hwm": hwm() - base, "sampled": max(peak[0], rss()) - base,
                "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base}, out

    Diagonal = DiagonalOperator  # a product allocates its output and nothing else

    g = torch.Generator().manual_seed(0)
    d = torch.rand(DIM, generator=g, dtype=torch.float64)
    d[:K + 2] = torch.tensor([10.0 - 0.5 * i for i in range(K + 2)], dtype=torch.float64)
    op = Diagonal(d)
    eigenpairs(Diagonal(d[:1000].clone()), k=K, max_basis=MAX_BASIS)  # warm up lazy imports
    out = {}
    for rv, cm in ((False, False), (False, None), (True, None)):
        mem, res = peak_growth(lambda: eigenpairs(op, k=K, tol=1e-10, max_basis=MAX_BASIS,
                                                  return_vectors=rv, check_multiplicity=cm))
        out[f"return_vectors={rv},probe={cm is None}"] = {
            **mem, "n_matvecs": res.n_matvecs, "n_restarts": res.n_restarts,
            "converged": res.converged, "values": res.values.tolist()}
        del res
    # The harness must see a transient excess: MAX_BASIS + 5 vectors allocated, written, freed.
    mem, _ = peak_growth(lambda: torch.ones(MAX_BASIS + 5, DIM, dtype=torch.float64).sum().item())
    out["wasteful"] = mem
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def measured():
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self (Linux)")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(DIM), str(MAX_BASIS), str(K)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if proc.returncode != 0 and "clear_refs" in proc.stderr:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def vectors(nbytes: float) -> float:
    return nbytes / (DIM * 8)


def test_harness_sees_a_transient_excess(measured):
    """A deliberately wasteful step (basis + 5 vectors, freed at once) is over the bound."""
    w = measured["wasteful"]
    assert vectors(w["hwm"]) >= MAX_BASIS + 5 - 0.05, w
    assert vectors(w["hwm"]) > MAX_BASIS + 4


# Measured at DIM = 3e6, MAX_BASIS = 12, K = 4: 13.2 × dim without the returned vectors and 16.0
# with them. Before the solver was made lean (start vector released, in-place orthogonalisation,
# w scaled straight into the basis, the thick restart in column blocks, Y built once in order and
# only when needed) the same solve peaked at 23.0, so this test does fail on a wasteful solver.
# The multiplicity probe (the default for k ≥ 2) needs the k vectors even when they are not
# returned, and keeps its own vectors within the basis's room (max_basis − k), so with it the
# bound is the one with vectors returned.
@pytest.mark.parametrize("return_vectors,probe", [(False, False), (False, True), (True, True)])
def test_lanczos_extra_memory_within_basis_plus_4(measured, return_vectors, probe):
    r = measured[f"return_vectors={return_vectors},probe={probe}"]
    assert r["converged"] and r["n_restarts"] >= 1, r  # the restart path was taken
    assert r["values"][:K] == pytest.approx([10.0, 9.5, 9.0, 8.5], rel=1e-9)
    bound = MAX_BASIS + 4 + (K if return_vectors or probe else 0)
    peak = vectors(max(r["hwm"], r["sampled"]))
    assert peak <= bound, (
        f"extra memory {peak:.2f} × dim float64 > bound {bound} × dim "
        f"(max_basis={MAX_BASIS} + 4"
        + (f" + k={K} returned vectors" if return_vectors else "")
        + f"); measured {r}"
    )
