"""Property-based tests (Hypothesis, fixed ``ci`` profile in ``tests/conftest.py``).

1. Estimators on random symmetric operators with planted spectra ``A = Q diag(λ) Qᵀ`` (float64,
   ``Q`` a seeded random orthogonal matrix): distinct, repeated, clustered, negative, low-rank
   and zero spectra. The reference is the planted ``λ`` itself (exact up to the rounding of
   forming ``A``, which the slack ``delta`` covers), never the code under test.

   * Lanczos: every Ritz value lies in ``[λ_min, λ_max]`` (Cauchy interlacing), within its
     residual of an eigenvalue (Parlett, Thm 11.5.1) and, where the true gap allows, within
     ``r²/gap`` of it (Kato-Temple); a breakdown gives exact eigenvalues and counts as
     convergence; with a full budget it always converges; otherwise it says ``converged=False``
     and has spent its budget. (A stopping test on the quadratic estimate r²/gap would claim
     convergence too early while a top cluster is still hidden: a test below holds one.)
   * Hutchinson / Hutch++: ``|estimate - tr(A)| <= 5 * stderr + delta``. This is a *statistical*
     bound: the standard error is itself estimated, so the test uses >= 15 residual probes (the
     studentised error then exceeds 5 with probability < 2e-4 per example for Gaussian-like
     samples) and a fixed, derandomised set of examples, so it cannot flake. The exact path
     (``num_matvecs >= n``) must be exact up to rounding with ``stderr == 0``.
   * SLQ: nodes interlace the spectrum, the weights of every run are a probability vector, and
     every run is an exact Gauss quadrature: ``Σ_i τ_i² θ_i^p = vᵀ A^p v / n`` for ``p <= 2m-1``
     (the documented Rademacher probes are redrawn here from the same seeded generator).

2. Fuzzing: random YAML documents through the config parser, and random ``.npz``/``.pt``/``.h5``
   contents (and raw bytes) through ``load_data``: the outcome is a valid result or an
   :class:`InputError` -- never another exception. ``NumericalError`` is accepted only when the
   inputs really hold NaN/Inf.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from landscape_cli.analyses.settings import RunConfig
from landscape_cli.errors import InputError, NumericalError
from landscape_cli.estimators.density import slq_density
from landscape_cli.estimators.lanczos import lanczos
from landscape_cli.estimators.trace import hutchinson_trace, hutchpp_trace
from landscape_cli.io.config import (
    COMMON,
    SECTIONS,
    read_config_file,
    resolve_config,
    resolve_run_config,
)
from landscape_cli.problem.loading import load_data

KINDS = ("distinct", "repeated", "clustered", "negative", "low-rank", "zero")


# ------------------------------------------------------------------ planted spectra
@st.composite
def planted(draw, min_n: int = 1, max_n: int = 40) -> tuple[torch.Tensor, np.ndarray, int]:
    """``(A, λ ascending, seed)`` with ``A = Q diag(λ) Qᵀ`` in float64."""
    n = draw(st.integers(min_n, max_n))
    kind = draw(st.sampled_from(KINDS))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "distinct":
        lam = rng.uniform(-1.0, 1.0, n)
    elif kind == "repeated":  # a few values, each with a multiplicity
        lam = rng.choice(rng.uniform(-1.0, 1.0, draw(st.integers(1, 3))), n)
    elif kind == "clustered":  # two tight clusters (relative width 1e-9)
        lam = rng.choice([-0.5, 1.0], n) + 1e-9 * rng.standard_normal(n)
    elif kind == "negative":
        lam = -rng.uniform(0.1, 1.0, n)
    elif kind == "low-rank":
        lam = np.zeros(n)
        rank = min(n, draw(st.integers(1, 3)))
        lam[:rank] = rng.uniform(-1.0, 1.0, rank)
    else:
        lam = np.zeros(n)
    lam = lam * scale
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q = q * np.sign(np.diag(r))  # Haar-distributed orthogonal Q
    a = (q * lam) @ q.T
    a = (a + a.T) / 2.0
    return torch.from_numpy(a), np.sort(lam), seed


def slack(lam: np.ndarray) -> float:
    """Rounding slack: forming A and the Krylov recurrences cost O(n eps ||A||) in float64."""
    return 1e-10 * max(float(np.abs(lam).max()), 1e-300) * max(len(lam), 1)


# ------------------------------------------------------------------ Lanczos
@given(
    problem=planted(),
    top_k=st.integers(1, 3),
    bottom_k=st.integers(0, 2),
    full_budget=st.booleans(),
    tol=st.sampled_from([1e-4, 1e-8]),
)
def test_lanczos_extremes_stay_within_their_bounds(problem, top_k, bottom_k, full_budget, tol):
    A, lam, seed = problem
    n = A.shape[0]
    top_k, bottom_k = min(top_k, n), min(bottom_k, n)
    max_iter = n if full_budget else min(n, max(top_k + bottom_k, 4))
    res = lanczos(A, top_k=top_k, bottom_k=bottom_k, max_iter=max_iter, tol=tol, seed=seed)
    delta = slack(lam)
    theta = res.ritz_values

    assert np.all(np.isfinite(theta)) and np.all(np.isfinite(res.error_bounds))
    assert lam[0] - delta <= theta[0] and theta[-1] <= lam[-1] + delta  # interlacing
    distance = np.abs(theta[:, None] - lam[None, :]).min(axis=1)
    assert np.all(distance <= res.ritz_residuals + delta)  # rigorous residual bound
    # every value is within its printed bound of some eigenvalue, and no bound is below the floor
    assert np.all(distance <= res.error_bounds + delta)
    assert np.all(res.error_bounds >= res.rounding_floor)
    nearest = np.argmin(np.abs(theta[:, None] - lam[None, :]), axis=1)
    for i, j in enumerate(
        nearest
    ):  # Kato-Temple with the *true* gap (a theorem, not the heuristic)
        gap = np.delete(np.abs(lam - theta[i]), j).min(initial=np.inf)
        if gap > res.ritz_residuals[i]:
            assert abs(theta[i] - lam[j]) <= res.ritz_residuals[i] ** 2 / gap + delta
    if full_budget:
        assert res.converged  # n steps span the space: a breakdown, which is a success
    if res.breakdown:
        assert res.converged
        assert np.all(distance <= delta)  # an invariant subspace: the Ritz values are exact
    if not res.converged:
        assert res.steps == max_iter  # it only gives up when the budget is spent


def test_lanczos_does_not_claim_convergence_before_finding_the_top_cluster():
    """A close top pair (1 and 1 - 10^-u): stopping on the quadratic estimate r²/gap would claim
    convergence early (on (1, 1 - 1e-5, 0.9984): at step 29, error 1.6e-3 for tol=1e-4); the
    stopping test on the residual claims it only within tol of λ_max."""
    rng = np.random.default_rng(5)
    n = int(rng.integers(20, 120))
    lam = rng.uniform(-1.0, 1.0, n)
    lam[-1], lam[-2] = 1.0, 1.0 - 10 ** rng.uniform(-5, -1)
    q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    A = torch.from_numpy((q * lam) @ q.T)
    res = lanczos(A, top_k=1, max_iter=200, tol=1e-4, seed=5)
    scale = max(abs(res.ritz_values[0]), abs(res.ritz_values[-1]))
    assert not res.converged or abs(res.top(1)[0] - lam.max()) <= 1e-4 * scale


def test_lanczos_breakdown_on_a_rank_two_operator_is_a_success():
    """Rank 2, five eigenvalues asked: the Krylov space is invariant after 3 steps (2 non-zero
    eigenvalues + the null space component); that is convergence, not an error, and new blocks
    fill the list from the null space: the top five are 3, 0, 0, 0, 0."""
    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.standard_normal((30, 2)))[0]
    A = torch.from_numpy(u @ np.diag([3.0, -2.0]) @ u.T)
    res = lanczos(A, top_k=5, max_iter=30, seed=1)
    assert res.converged and res.multiplicity_checked
    np.testing.assert_allclose(res.top(5), [3.0, 0.0, 0.0, 0.0, 0.0], atol=1e-12)
    assert np.all(res.resolved[res.top_indices(5)])
    assert res.bottom(1)[0] == pytest.approx(-2.0, abs=1e-12)


def test_lanczos_start_in_an_eigenspace_breaks_down_at_once():
    lam = np.array([5.0, 1.0, 1.0, -1.0])
    rng = np.random.default_rng(3)
    q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    A = torch.from_numpy((q * lam) @ q.T)
    res = lanczos(A, start=torch.from_numpy(q[:, 0].copy()), top_k=1, max_iter=4)
    assert res.breakdown and res.converged and res.steps == 1
    assert res.top(1)[0] == pytest.approx(5.0, abs=1e-12)


# ------------------------------------------------------------------ trace
@given(
    problem=planted(min_n=60, max_n=90),
    method=st.sampled_from(["hutchinson", "hutch++"]),
    budget=st.integers(45, 59),
)
def test_trace_estimates_are_within_five_standard_errors(problem, method, budget):
    A, lam, seed = problem
    estimator = hutchinson_trace if method == "hutchinson" else hutchpp_trace
    est = estimator(A, budget, seed=seed)
    exact = float(lam.sum())
    delta = slack(lam) * len(lam)  # n quadratic forms, each with O(n eps ||A||) rounding
    assert est.method == method and est.matvecs == budget
    assert math.isfinite(est.estimate) and est.stderr >= 0
    assert abs(est.estimate - exact) <= 5.0 * est.stderr + delta


@given(problem=planted(max_n=30), method=st.sampled_from(["hutchinson", "hutch++"]))
def test_trace_with_a_budget_of_n_is_exact(problem, method):
    A, lam, seed = problem
    estimator = hutchinson_trace if method == "hutchinson" else hutchpp_trace
    est = estimator(A, A.shape[0] + 3, seed=seed)
    assert est.method == "exact" and est.stderr == 0.0 and est.matvecs == A.shape[0]
    assert abs(est.estimate - float(lam.sum())) <= slack(lam) * len(lam)


# ------------------------------------------------------------------ SLQ
def rademacher_probes(seed: int, n: int, runs: int) -> list[np.ndarray]:
    """The probes ``slq_density`` documents: drawn in sequence from one seeded CPU generator."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2.0 - 1.0).numpy()
        for _ in range(runs)
    ]


@given(problem=planted(max_n=30), runs=st.integers(1, 4), steps=st.integers(2, 12))
def test_slq_is_an_exact_gauss_quadrature_of_each_probe(problem, runs, steps):
    A, lam, seed = problem
    n = A.shape[0]
    res = slq_density(A, runs=runs, steps=steps, seed=seed)
    delta = slack(lam)
    a = A.numpy()
    norm = max(float(np.abs(lam).max()), 1e-300)
    for nodes, weights, v in zip(
        res.nodes, res.weights, rademacher_probes(seed, n, runs), strict=True
    ):
        used = np.isfinite(nodes)
        theta, w = nodes[used], weights[used]
        assert np.all(w >= -1e-15) and abs(w.sum() - 1.0) <= 1e-12
        assert np.all(weights[~used] == 0)
        assert np.all(theta >= lam[0] - delta) and np.all(theta <= lam[-1] + delta)
        m = len(theta)
        invariant = m < min(steps, n) or m == n  # the Krylov space is A-invariant
        exact_up_to = 6 if invariant else 2 * m - 1  # Gauss: exact up to degree 2m - 1
        power = v.copy()
        for p in range(exact_up_to + 1):
            moment = float(v @ power) / n  # vᵀ A^p v / n, with ||v||² = n
            assert abs(float(w @ theta**p) - moment) <= 1e-9 * norm**p + 1e-300, (p, m)
            power = a @ power
    density = res.density(grid=200)
    integral = float(np.sum((density.values[1:] + density.values[:-1]) * np.diff(density.grid)) / 2)
    assert integral == pytest.approx(1.0, abs=1e-9)


# ------------------------------------------------------------------ config fuzzing
KNOWN_KEYS = [*COMMON, *SECTIONS, "batch-size", "max-samples", "model"]
SECTION_KEYS = sorted({key for options in SECTIONS.values() for key in options})
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.sampled_from([10**30, -(10**30), 10**400])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["sample:mlp", "sample:nope", "float64", "auto", "1,2", "a.b:c", "x.py:f"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(SECTION_KEYS) | st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
documents = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=10), values, max_size=6)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def only_input_errors(call):
    """Run ``call()``; an :class:`InputError` is an accepted outcome, any other exception fails."""
    try:
        return call()
    except InputError as exc:
        assert str(exc).strip() and "\n" not in str(exc)  # one line, not empty
        return None


@given(document=documents | values)
def test_config_parser_accepts_or_raises_input_error(scratch, document):
    path = scratch / "fuzz.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    config = only_input_errors(lambda: resolve_config({}, path))
    assert config is None or isinstance(config, RunConfig)
    only_input_errors(lambda: resolve_run_config({}, path))


@given(text=st.text(max_size=80))
def test_config_parser_on_arbitrary_text(scratch, text):
    path = scratch / "raw.yaml"
    path.write_text(text, encoding="utf-8")
    only_input_errors(lambda: read_config_file(path))


@given(
    key=st.sampled_from([*(k for k in COMMON if k != "model_kwargs")])
    | st.sampled_from([f"{s}.{k}" for s, options in SECTIONS.items() for k in options]),
    value=scalars | st.lists(scalars, max_size=3),
)
def test_flag_values_accept_or_raise_input_error(key, value):
    config = only_input_errors(lambda: resolve_config({key: value}))
    assert config is None or isinstance(config, RunConfig)


# ------------------------------------------------------------------ data-file fuzzing
DTYPES = ["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64", "<U3"]


def make_array(dtype: str, shape: tuple[int, ...], fill: float) -> np.ndarray:
    if dtype == "<U3":
        return np.full(shape, "ab")
    if np.dtype(dtype).kind in "iub" and not math.isfinite(fill):
        fill = 0.0  # NaN/Inf cannot be cast to integers
    return np.full(shape, fill).astype(dtype)


arrays = st.builds(
    make_array,
    st.sampled_from(DTYPES),
    st.lists(st.integers(0, 4), max_size=3).map(tuple),
    st.sampled_from([0.0, 1.0, -2.5, float("nan"), float("inf")]),
)
array_maps = st.dictionaries(st.sampled_from(["x", "y", "inputs", "labels"]), arrays, max_size=3)


def nonfinite(x: object) -> bool:
    """Whether ``x`` is a floating/complex array holding NaN or Inf."""
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        return False
    return (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())


def check_loaded(call, x: object) -> None:
    """``call()`` returns readable batches, raises a one-line InputError, or (only when the
    inputs ``x`` hold NaN/Inf) a NumericalError."""
    try:
        batches = call()
    except InputError as exc:
        assert str(exc).strip() and "\n" not in str(exc)
        return
    except NumericalError:
        assert nonfinite(x)
        return
    total = 0
    for batch, weight in batches:  # the batches it promises can be read
        total += batch[0].shape[0]
        assert weight > 0
    assert total == batches.num_samples


@given(contents=array_maps, batch_size=st.integers(1, 5), max_samples=st.none() | st.integers(1, 5))
def test_npz_loader_loads_or_raises_input_error(scratch, contents, batch_size, max_samples):
    path = scratch / "fuzz.npz"
    np.savez(path, **contents)
    check_loaded(lambda: load_data(str(path), batch_size, max_samples), contents.get("x"))


tensors = arrays.filter(lambda a: a.dtype.kind != "U").map(torch.from_numpy)
pt_objects = st.recursive(
    tensors | st.none() | st.integers() | st.text(max_size=5) | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, min_size=2, max_size=2).map(tuple)
        | st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(obj=pt_objects, batch_size=st.integers(1, 5))
def test_pt_loader_loads_or_raises_input_error(scratch, obj, batch_size):
    path = scratch / "fuzz.pt"
    torch.save(obj, path)
    x = obj.get("x") if isinstance(obj, dict) else None
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x = obj[0]
    check_loaded(lambda: load_data(str(path), batch_size, None), x)


@given(contents=array_maps, group_x=st.booleans(), batch_size=st.integers(1, 5))
def test_h5_loader_loads_or_raises_input_error(scratch, contents, group_x, batch_size):
    path = scratch / "fuzz.h5"
    with h5py.File(path, "w") as f:
        for key, value in contents.items():
            f[key] = value.astype("S3") if value.dtype.kind == "U" else value
        if group_x and "x" not in f:
            f.create_group("x")
    check_loaded(lambda: load_data(str(path), batch_size, None), contents.get("x"))


@given(data=st.binary(max_size=200), suffix=st.sampled_from([".pt", ".npz", ".h5", ".pth"]))
def test_raw_bytes_are_input_errors(scratch, data, suffix):
    assume(data)  # an empty file has its own message, covered by the matrix
    path = scratch / f"raw{suffix}"
    path.write_bytes(data)
    with pytest.raises(InputError):
        load_data(str(path), 4, None)
