"""Loss surfaces (Li et al. 2018) against closed forms and independent computations.

Tolerances: on the analytic quadratic ½ wᵀAw in float64 the surface is a handful of flops per
point and Lanczos runs to breakdown (n = 6 ≤ max_iter), so the eigenvector is exact to ~1e-15
and surfaces match ½ λ t² to 1e-10 (values are O(10)). Filter norms are compared at rtol 1e-12
(float64 rescaling of one vector). Losses of the float64 CNN recomputed through another code path
(the objective's own loss, or another checkpoint's objective) agree to rounding, ~1e-15, hence
1e-10; the centre of the grid is exactly w, so it is compared for equality up to 1e-12.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from landscape_cli.analyses.directions import (
    eigen_directions,
    interpolation_direction,
    random_directions,
)
from landscape_cli.analyses.surface import (
    SurfaceResult,
    SurfaceSettings,
    analyze_surface,
    classification_accuracy,
    evaluate_points,
    grid,
    loss_surface_1d,
    loss_surface_2d,
    validate_settings,
)
from landscape_cli.errors import InputError
from landscape_cli.io.config import resolve_run_config, sample_defaults
from landscape_cli.problem.data import no_data, tensor_batches
from landscape_cli.problem.loading import build_objective, load_checkpoint
from landscape_cli.problem.objective import Objective

CNN_FLAGS = {"checkpoint": "sample:cnn", "dtype": "float64"}


@pytest.fixture(scope="module")
def cnn() -> Objective:
    return build_objective(resolve_run_config(CNN_FLAGS))


def quadratic(n: int = 6, seed: int = 3, w0: torch.Tensor | None = None):
    """``½ wᵀAw`` with a random symmetric indefinite ``A`` (eigenvalues from eigvalsh)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = (m + m.T) / 2 + 2.0 * torch.eye(n, dtype=torch.float64)
    model = nn.Module()
    model.w = nn.Parameter(torch.zeros(n, dtype=torch.float64) if w0 is None else w0.clone())
    obj = Objective(model, lambda mod, b: 0.5 * mod.w @ A @ mod.w, no_data(), dtype=torch.float64)
    return obj, A, np.linalg.eigvalsh(A.numpy())


def test_eigen_surface_on_quadratic_is_half_lambda_t_squared():
    obj, _, eig = quadratic()
    res = analyze_surface(obj, SurfaceSettings(dims=1, kind="eigen", points=21, span=2.0), seed=1)
    t = np.linspace(-2, 2, 21)
    expected = 0.5 * eig[-1] * t**2
    np.testing.assert_allclose(res.eigenvalues, [eig[-1]], atol=1e-10)
    np.testing.assert_allclose(res.xs, t, atol=1e-15)
    np.testing.assert_allclose(res.losses, expected, atol=1e-10)
    np.testing.assert_allclose(res.quadratic_model, expected, atol=1e-10)
    assert res.accuracies is None  # no data: no accuracy
    assert res.info.hvp_count > 0 and res.kind == "eigen" and res.name == "eigen-1d"
    json.dumps(res.to_dict(), allow_nan=False)


def test_quadratic_model_matches_away_from_the_minimum_in_1d_and_2d():
    """At w0 ≠ 0 the gradient term matters: L(w0 + x v1 + y v2) = L + x gᵀv1 + y gᵀv2 + ½(λ1x² +
    λ2y²) exactly for a quadratic, so a wrong slope sign or a missing term fails."""
    w0 = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)
    obj, A, eig = quadratic(w0=w0)
    assert obj.grad_norm > 1.0
    res1 = analyze_surface(obj, SurfaceSettings(dims=1, kind="eigen", points=9))
    np.testing.assert_allclose(res1.quadratic_model, res1.losses, atol=1e-10)
    res2 = analyze_surface(obj, SurfaceSettings(dims=2, kind="eigen", points=7, span=0.5))
    np.testing.assert_allclose(res2.eigenvalues, eig[::-1][:2], atol=1e-10)
    assert res2.losses.shape == (7, 7)
    np.testing.assert_allclose(res2.quadratic_model, res2.losses, atol=1e-10)
    # independent check of the grid layout: row i is ys[i], column j is xs[j]
    v1, v2 = eigen_directions(obj, 2, seed=0).vectors
    A64 = A.numpy()
    for i, j in [(0, 6), (2, 5), (6, 1)]:
        p = w0.numpy() + res2.xs[j] * v1.numpy() + res2.ys[i] * v2.numpy()
        assert res2.losses[i, j] == pytest.approx(0.5 * p @ A64 @ p, abs=1e-10)


def test_eigen_directions_are_unit_eigenvectors():
    obj, A, eig = quadratic()
    e = eigen_directions(obj, 2, seed=5)
    np.testing.assert_allclose(e.eigenvalues, eig[::-1][:2], atol=1e-10)
    for v, lam in zip(e.vectors, e.eigenvalues, strict=True):
        assert float(torch.linalg.vector_norm(v)) == pytest.approx(1.0, abs=1e-12)
        torch.testing.assert_close(A @ v, lam * v, atol=1e-10, rtol=0)


def test_filter_normalised_directions_have_the_filter_norms_of_w(cnn):
    w = cnn.unflatten(cnn.flat_parameters())
    ndims = {len(s) for s in cnn.parameter_shapes}
    assert {1, 2, 4} <= ndims  # conv weights 4-D, linear 2-D, BatchNorm and bias 1-D
    for ignore in (True, False):
        dirs = random_directions(cnn, 2, seed=7, ignore_bn_and_bias=ignore)
        for d in dirs:
            for name, dp, wp in zip(cnn.parameter_names, cnn.unflatten(d), w, strict=True):
                if wp.ndim >= 2:
                    got = torch.linalg.vector_norm(dp.reshape(dp.shape[0], -1), dim=1)
                    want = torch.linalg.vector_norm(wp.reshape(wp.shape[0], -1), dim=1)
                    torch.testing.assert_close(got, want, rtol=1e-12, atol=0, msg=name)
                    assert not torch.allclose(dp, wp)  # a random direction, not w itself
                elif ignore:
                    assert bool((dp == 0).all()), name
                else:
                    got = torch.linalg.vector_norm(dp)
                    want = torch.linalg.vector_norm(wp)
                    torch.testing.assert_close(got, want, rtol=1e-12, atol=0, msg=name)


def test_unnormalised_directions_have_the_norm_of_w(cnn):
    w = cnn.flat_parameters()
    (d,) = random_directions(cnn, 1, seed=7, filter_normalize=False, ignore_bn_and_bias=False)
    assert float(torch.linalg.vector_norm(d)) == pytest.approx(
        float(torch.linalg.vector_norm(w)), rel=1e-12
    )


def test_orthogonalised_second_direction(cnn):
    d1, d2 = random_directions(cnn, 2, seed=3, orthogonalize=True)
    e1, e2 = random_directions(cnn, 2, seed=3)
    torch.testing.assert_close(d1, e1, rtol=0, atol=0)
    assert abs(float(d1 @ d2)) <= 1e-12 * float(d1 @ d1)
    assert float(torch.linalg.vector_norm(d2)) == pytest.approx(
        float(torch.linalg.vector_norm(e2)), rel=1e-12
    )


def test_seeds(cnn):
    a = random_directions(cnn, 2, seed=11)
    b = random_directions(cnn, 2, seed=11)
    c = random_directions(cnn, 2, seed=12)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a, c, strict=True):
        assert not torch.allclose(x, y)
    assert not torch.allclose(a[0], a[1])  # the two directions of one surface differ


def snapshot(objective: Objective):
    return (
        {k: v.detach().clone() for k, v in objective.model.state_dict().items()},
        [p.clone() for p in objective._params],
        {k: v.clone() for k, v in objective._constants.items()},
        objective.model.training,
    )


def test_2d_surface_centre_accuracy_and_no_mutation(cnn):
    before = snapshot(cnn)
    hooks = len(cnn.model._forward_hooks)
    ticks = []
    res = analyze_surface(
        cnn,
        SurfaceSettings(dims=2, points=5, span=0.5),
        seed=2,
        progress=lambda stage, d, t: ticks.append((stage, d, t)),
    )
    after = snapshot(cnn)
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k]), k
    for p, q in zip(before[1], after[1], strict=True):
        assert torch.equal(p, q)
    for k, v in before[2].items():
        assert torch.equal(v, after[2][k]), k
    assert before[3] == after[3]
    assert len(cnn.model._forward_hooks) == hooks

    total = 25 * len(cnn.batches)
    assert ticks[-1] == ("surface", total, total) and len(ticks) == total
    assert res.losses.shape == (5, 5) and res.accuracies.shape == (5, 5)
    assert res.losses[2, 2] == pytest.approx(cnn.loss_value, abs=1e-12)
    assert res.center_loss == res.losses[2, 2]
    # away from the centre the loss changes (the surface is not trivially flat)
    assert np.ptp(res.losses) > 1e-3

    # accuracy at the centre computed directly on a float64 copy of the model
    x, y = cnn.batches.source
    model = copy.deepcopy(cnn.model).double().eval()
    with torch.no_grad():
        direct = float((model(x.double()).argmax(dim=1) == y).double().mean())
    assert res.accuracies[2, 2] == direct
    assert 0.0 <= res.accuracies.min() <= res.accuracies.max() <= 1.0

    # a corner recomputed independently through Objective.loss
    d1, d2 = random_directions(cnn, 2, seed=2)
    corner = cnn.loss(float(res.xs[0]) * d1 + float(res.ys[4]) * d2)
    assert res.losses[4, 0] == pytest.approx(corner, abs=1e-10)
    out = res.to_dict()
    json.dumps(out, allow_nan=False)
    assert out["command"] == "surface" and out["kind"] == "random" and out["dims"] == 2
    assert len(out["losses"]) == 5 and len(out["losses"][0]) == 5
    assert out["directions"]["filter_normalize"] is True


def test_surface_over_several_batches_equals_one_batch(cnn):
    """Batch-outer accumulation with weights n_b/N equals the full-batch loss."""
    small = build_objective(resolve_run_config({**CNN_FLAGS, "batch_size": 100}))
    assert len(small.batches) == 3
    (d,) = random_directions(cnn, 1, seed=4)
    ts = [-0.5, 0.25, 1.0]
    a, acc_a = loss_surface_1d(cnn, d, ts)
    b, acc_b = loss_surface_1d(small, d, ts)
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(acc_a, acc_b, atol=1e-12)


def test_accuracy_is_none_when_not_classification():
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randn(10, 1, dtype=torch.float64)
    model = nn.Linear(3, 1).double()
    obj = Objective(
        model,
        lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]),
        tensor_batches((x, y), 4, None, "toy"),
        dtype=torch.float64,
    )
    res = analyze_surface(obj, SurfaceSettings(dims=1, points=3))
    assert res.accuracies is None and "accuracies" in res.notes
    assert classification_accuracy(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])) == 0.5
    assert classification_accuracy(torch.zeros(4, 1), torch.tensor([0, 1, 1, 0])) is None
    assert classification_accuracy(torch.zeros(4, 3), torch.zeros(4)) is None


def test_interpolation_to_itself_is_flat(cnn):
    state = load_checkpoint(cnn.checkpoint.path).state_dict
    d = interpolation_direction(cnn, state)
    assert float(torch.linalg.vector_norm(d)) == 0.0
    losses, _ = loss_surface_1d(cnn, d, grid(-0.5, 1.5, 5))
    np.testing.assert_allclose(losses, cnn.loss_value, atol=1e-12)


def test_interpolation_reaches_the_other_checkpoint(cnn, tmp_path):
    ckpt = load_checkpoint(cnn.checkpoint.path)
    g = torch.Generator().manual_seed(0)
    names = set(dict(cnn.model.named_parameters()))
    other_state = {
        k: (v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) if k in names else v)
        for k, v in ckpt.state_dict.items()
    }
    path = tmp_path / "other.pt"
    torch.save(other_state, path)
    flags = {**sample_defaults("cnn"), "checkpoint": str(path), "dtype": "float64"}
    other = build_objective(resolve_run_config(flags))
    assert abs(other.loss_value - cnn.loss_value) > 1e-3
    res = analyze_surface(cnn, SurfaceSettings(dims=1, to=str(path), points=21))
    assert res.kind == "interpolation" and res.name == "interpolation-1d"
    assert res.xs[0] == -0.5 and res.xs[-1] == 1.5
    i0, i1 = int(np.where(res.xs == 0.0)[0][0]), int(np.where(res.xs == 1.0)[0][0])
    assert res.losses[i0] == pytest.approx(cnn.loss_value, abs=1e-12)
    assert res.losses[i1] == pytest.approx(other.loss_value, abs=1e-10)
    assert res.to_sha256 == other.checkpoint.sha256 and "buffers" not in res.notes

    # different BatchNorm statistics are held fixed along the line, and said so
    bn = dict(other_state)
    bn["1.running_mean"] = bn["1.running_mean"] + 1.0
    torch.save(bn, tmp_path / "bn.pt")
    res_bn = analyze_surface(cnn, SurfaceSettings(dims=1, to=str(tmp_path / "bn.pt"), points=5))
    assert "buffers" in res_bn.notes
    np.testing.assert_allclose(res_bn.losses, res.losses[::5], atol=1e-12)

    res2 = analyze_surface(cnn, SurfaceSettings(dims=2, to=str(path), points=5))
    assert res2.losses.shape == (5, 5)
    assert res2.losses[2, 3] == pytest.approx(other.loss_value, abs=1e-10)  # (x=1, y=0)


def test_2d_helper_layout(cnn):
    d1, d2 = random_directions(cnn, 2, seed=9)
    losses, _ = loss_surface_2d(cnn, d1, d2, [0.0, 0.3], [-0.2, 0.0, 0.1], metric_fn=None)
    assert losses.shape == (3, 2)
    assert losses[1, 0] == pytest.approx(cnn.loss_value, abs=1e-12)
    assert losses[2, 1] == pytest.approx(cnn.loss(0.3 * d1 + 0.1 * d2), abs=1e-10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dims": 3}, "dims"),
        ({"kind": "hessian"}, "kind"),
        ({"points": 1}, "points"),
        ({"span": 0.0}, "span"),
        ({"kind": "interpolation"}, "needs `to`"),
        ({"kind": "eigen", "to": "x.pt"}, "`kind=eigen`"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        validate_settings(SurfaceSettings(**kwargs))


def test_analyze_surface_and_analyze_all_refuse_bad_settings_as_input_errors():
    from landscape_cli.analyses.bundle import analyze_all
    from landscape_cli.analyses.settings import RunConfig

    bad = SurfaceSettings(points=1)
    with pytest.raises(InputError, match="surface settings: points must be >= 2"):
        analyze_surface(None, bad)  # refused before the objective is touched
    with pytest.raises(InputError, match="report settings: points must be >= 2"):
        analyze_all(None, RunConfig(surface=bad))


def test_grid_hits_zero_and_one_exactly():
    assert grid(-1.0, 1.0, 21)[10] == 0.0
    g = grid(-0.5, 1.5, 21)
    assert g[5] == 0.0 and g[15] == 1.0


def test_surface_group_round_trips_through_hdf5(tmp_path):
    """The surface's group: coordinates as dimension scales of the loss, and read back equal."""
    import h5py

    obj, _, eig = quadratic()
    res = analyze_surface(obj, SurfaceSettings(dims=2, kind="eigen", points=5))
    with h5py.File(tmp_path / "r.h5", "w") as f:
        res.to_hdf5(f.require_group("surface").create_group(res.name))
    with h5py.File(tmp_path / "r.h5", "r") as f:
        g = f["surface/eigen-2d"]
        np.testing.assert_array_equal(g["loss"][()], res.losses)
        np.testing.assert_array_equal(g["x"][()], res.xs)
        assert g["loss"].dims[0][0].name.endswith("/y") and g["loss"].dims[1][0].name.endswith("/x")
        np.testing.assert_allclose(g["eigenvalues"][()], eig[::-1][:2], atol=1e-10)
        assert g.attrs["kind"] == "eigen" and "accuracy" not in g
        back = SurfaceResult.from_hdf5(g)
    expected = {k: v for k, v in res.to_dict().items() if k != "lanczos"}  # not kept
    assert back.name == "eigen-2d" and back.to_dict() == expected


def test_train_mode_surface_uses_each_batch_s_dropout_masks():
    """In train mode every batch draws its Dropout mask from (seed, batch index); the surface must
    use the same masks as the objective, so its value at the checkpoint is the objective's loss
    (batch 0's mask for every batch would give another value)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 3))
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    ce = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])  # noqa: E731
    objective = Objective(
        model, ce, tensor_batches((x, y), 8, None, "t"), mode="train", dtype=torch.float64
    )
    zero = torch.zeros(objective.num_parameters, dtype=torch.float64)
    losses, _ = evaluate_points(objective, [zero], np.zeros((1, 1)))
    assert losses[0] == pytest.approx(objective.loss_value, rel=1e-12)


def _mse_objective(model: nn.Module) -> Objective:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randn(16, 1, generator=g, dtype=torch.float64)
    loss = nn.MSELoss()
    return Objective(
        model.double(),
        lambda m, b: loss(m(b[0]), b[1]),
        tensor_batches((x, y), 16, None, "t"),
        dtype=torch.float64,
    )


def test_a_zero_random_direction_is_an_error_not_a_flat_surface():
    """Only 1-D tensors (skipped by ignore_bn_and_bias) or zero weights: the filter-normalised
    direction is exactly 0 and the 'surface' would be constant; it is refused with a hint."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.zero_()
    objective = _mse_objective(model)
    with pytest.raises(InputError, match="random direction is zero: 1 of 2 trainable tensors"):
        analyze_surface(objective, SurfaceSettings(dims=1, points=5))
    included = analyze_surface(
        objective, SurfaceSettings(dims=1, points=5, ignore_bn_and_bias=False)
    )
    assert np.ptp(included.losses) > 0


def test_interpolation_notes_frozen_parameters_that_differ(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    model[0].weight.requires_grad_(False)  # a frozen feature extractor
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight.add_(0.5)
        other[2].weight.add_(0.3)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    res = analyze_surface(
        _mse_objective(model), SurfaceSettings(dims=1, to=str(tmp_path / "other.pt"), points=5)
    )
    assert "'0.weight'" in res.notes["buffers"] and "frozen" in res.notes["buffers"]
    torch.save(model.state_dict(), tmp_path / "same.pt")
    same = analyze_surface(
        _mse_objective(model), SurfaceSettings(dims=1, to=str(tmp_path / "same.pt"), points=5)
    )
    assert "buffers" not in same.notes


def test_a_direction_orthogonalised_to_zero_is_an_error():
    """nn.Linear(1, 1) without its bias has one free coordinate: the second orthogonalised
    direction is 0 and the surface would be silently constant along y."""
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, generator=g, dtype=torch.float64)
    y = torch.randn(8, 1, generator=g, dtype=torch.float64)
    objective = Objective(
        model.double(),
        lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(),
        tensor_batches((x, y), 8, None, "t"),
        dtype=torch.float64,
    )
    with pytest.raises(InputError, match="direction 2 lies in the span"):
        analyze_surface(objective, SurfaceSettings(dims=2, points=3, orthogonalize=True))
    with pytest.raises(InputError, match="every trainable tensor is zero"):
        with torch.no_grad():
            model.weight.zero_()
            model.bias.zero_()
        zero = Objective(
            model,
            lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(),
            tensor_batches((x, y), 8, None, "t"),
            dtype=torch.float64,
        )
        analyze_surface(zero, SurfaceSettings(dims=1, points=3, ignore_bn_and_bias=False))
