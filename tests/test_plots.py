"""Every plot kind in every format is a valid, non-trivial image (Agg, no pyplot)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import matplotlib.image
import numpy as np
import pytest

from landscape_cli.render import plots


def density_figure():
    grid = np.linspace(-1, 10, 300)
    values = np.exp(-(grid**2) / 0.1) + 0.01 * np.exp(-((grid - 8) ** 2) / 0.1)
    return plots.plot_density(
        grid,
        values / np.trapezoid(values, grid),
        top_eigenvalues=[8.0, 7.5],
        lambda_min=-0.3,
        sigma=0.1,
    )


def figures():
    t = np.linspace(-1, 1, 21)
    xs = ys = np.linspace(-1, 1, 11)
    Z = np.add.outer(ys**2, 2 * xs**2)
    return {
        "density": density_figure,
        "ritz": lambda: plots.plot_ritz_convergence(
            [np.array([1.0]), np.array([0.5, 2.0]), np.array([0.1, 1.0, 3.0])], exact=[3.0]
        ),
        "sharpness": lambda: plots.plot_sharpness(
            [0.01, 0.1, 0.05],
            {
                "worst_case": [1e-4, 1e-2, 3e-3],
                "one_step": [5e-5, 6e-3, None],
                "average_case": [1e-6, 1e-4, 3e-5],
                "second_order": [1e-4, 1.2e-2, 3e-3],
            },
            halfwidth=[1e-7, 1e-5, 3e-6],
        ),
        "curve1d": lambda: plots.plot_curve_1d(
            t, 0.5 * 3 * t**2 + 0.1 * t**3, model=1.5 * t**2, accuracy=1 - t**2 / 4
        ),
        "contour": lambda: plots.plot_contour_2d(xs, ys, Z),
        "surface3d": lambda: plots.plot_surface_3d(xs, ys, Z),
        "track": lambda: plots.plot_track(
            np.array([40.0, 80, 120]), np.array([1.9, 2.2, 2.7]), lr=np.array([0.05, 0.05, 0.05])
        ),
    }


@pytest.mark.parametrize("kind", list(figures()))
@pytest.mark.parametrize("fmt", plots.FORMATS)
def test_every_plot_in_every_format(tmp_path, kind, fmt):
    path = plots.save_figure(figures()[kind](), tmp_path / f"{kind}.{fmt}")
    data = path.read_bytes()
    if fmt == "png":
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 200
        assert image[..., :3].std() > 0.05  # not a blank canvas
    elif fmt == "svg":
        root = ET.fromstring(data)
        assert root.tag.endswith("svg") and len(list(root.iter())) > 50
    else:
        assert data.startswith(b"%PDF") and len(data) > 2000


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unsupported figure format"):
        plots.save_figure(density_figure(), tmp_path / "x.jpg")
