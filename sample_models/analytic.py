"""Analytic 2-D objectives as "models", with closed-form gradients, Hessians and critical points.

A :class:`Point` is an ``nn.Module`` whose only parameter ``w = (x, y)`` is the position; each
objective is a custom loss with the project's signature ``fn(model, batch) -> scalar tensor``
(``batch`` is ``None``: there is no data). They are the unit tests of the whole pipeline: the
Hessian of every objective is known exactly, so a Lanczos estimate, a trace or a critical-point
classification can be checked against a number derived by hand.

=============  ============================  ===============================================
objective      f(x, y)                       critical points (Hessian eigenvalues)
=============  ============================  ===============================================
bowl           x^2 + y^2                     (0, 0) minimum (2, 2)
neg_bowl       -x^2 - y^2                    (0, 0) maximum (-2, -2)
saddle         x^2 - y^2                     (0, 0) saddle (2, -2)
monkey_saddle  x^3 - 3 x y^2                 (0, 0) degenerate (0, 0)
cubic          x^3 + 3 x y - y^3             (0, 0) saddle (3, -3); (1, -1) minimum (9, 3)
quartic        x^4 + y^2                     (0, 0) degenerate minimum (0, 2)
rosenbrock     (1 - x)^2 + 100 (y - x^2)^2   (1, 1) minimum (501 ± sqrt(250601): 1001.6, 0.3994)
=============  ============================  ===============================================

Example:
    >>> import torch
    >>> point = Point(1.0, -1.0).to(torch.float64)
    >>> float(cubic(point, None))
    -1.0
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "OBJECTIVES",
    "Point",
    "bowl",
    "cubic",
    "monkey_saddle",
    "neg_bowl",
    "quartic",
    "rosenbrock",
    "saddle",
]


class Point(nn.Module):
    """A point ``w = (x, y)`` in the plane: one parameter of shape ``(2,)``.

    The parameter has the default floating dtype (float32 unless changed) and follows
    ``.to(dtype)`` / ``.to(device)`` like any module parameter. ``forward()`` returns ``w``.
    Coordinates are rounded to that dtype at construction (``-1.2`` becomes the nearest float32
    even after ``.to(torch.float64)``); integers and other dyadic values are exact.
    """

    def __init__(self, x: float = 0.0, y: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([float(x), float(y)]))

    def forward(self, *_: object) -> torch.Tensor:
        """Return the position ``w`` (any inputs are ignored)."""
        return self.w

    def extra_repr(self) -> str:
        x, y = self.w.detach().tolist()
        return f"x={x:g}, y={y:g}"


def _xy(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The coordinates ``(x, y)`` of a :class:`Point`, read through attribute access.

    Attribute access (not ``model.parameters()``) keeps ``torch.func.functional_call`` working:
    it substitutes ``model.w`` for the duration of the call.
    """
    w = getattr(model, "w", None)
    if not isinstance(w, torch.Tensor) or w.shape != (2,):
        raise TypeError(
            "analytic objectives need a model with a parameter `w` of shape (2,), "
            f"e.g. landscape_cli.sample_models.analytic:Point; got {type(model).__name__}"
        )
    return w[0], w[1]


def bowl(model: nn.Module, batch: object = None) -> torch.Tensor:
    """``f = x^2 + y^2``, a strictly convex bowl.

    Gradient ``(2x, 2y)``; Hessian ``[[2, 0], [0, 2]]`` everywhere.
    Critical point: ``(0, 0)``, the global minimum (eigenvalues 2, 2).
    """
    x, y = _xy(model)
    return x * x + y * y


def neg_bowl(model: nn.Module, batch: object = None) -> torch.Tensor:
    """``f = -x^2 - y^2``, an upside-down bowl.

    Gradient ``(-2x, -2y)``; Hessian ``[[-2, 0], [0, -2]]`` everywhere.
    Critical point: ``(0, 0)``, the global maximum (eigenvalues -2, -2).
    """
    x, y = _xy(model)
    return -(x * x) - y * y


def saddle(model: nn.Module, batch: object = None) -> torch.Tensor:
    """``f = x^2 - y^2``, the standard non-degenerate saddle.

    Gradient ``(2x, -2y)``; Hessian ``[[2, 0], [0, -2]]`` everywhere.
    Critical point: ``(0, 0)``, a saddle (eigenvalues 2, -2; negative fraction 1/2).
    """
    x, y = _xy(model)
    return x * x - y * y


def monkey_saddle(model: nn.Module, batch: object = None) -> torch.Tensor:
    """``f = x^3 - 3 x y^2``, the monkey saddle (three descending valleys).

    Gradient ``(3x^2 - 3y^2, -6xy)``; Hessian ``[[6x, -6y], [-6y, -6x]]``, with eigenvalues
    ``±6 sqrt(x^2 + y^2)``.
    Critical point: ``(0, 0)`` only, where the Hessian is the zero matrix: a degenerate critical
    point that second-order information cannot classify (it is neither minimum nor maximum).
    """
    x, y = _xy(model)
    return x**3 - 3 * x * y * y


def cubic(model: nn.Module, batch: object = None) -> torch.Tensor:
    """``f = x^3 + 3xy - y^3``.

    Gradient ``(3x^2 + 3y, 3x - 3y^2)``; Hessian ``[[6x, 3], [3, -6y]]``.
    Critical points: ``y = -x^2`` and ``x = y^2`` give ``x = x^4``, so ``(0, 0)`` and ``(1, -1)``.

    * ``(0, 0)``: Hessian ``[[0, 3], [3, 0]]``, eigenvalues ``3, -3``: a saddle, ``f = 0``.
    * ``(1, -1)``: Hessian ``[[6, 3], [3, 6]]``, eigenvalues ``9, 3``: a local minimum, ``f = -1``.
    """
    x, y = _xy(model)
    return x**3 + 3 * x * y - y**3


def quartic(model: nn.Module, batch: object = None) -> torch.Tensor:
    """``f = x^4 + y^2``.

    Gradient ``(4x^3, 2y)``; Hessian ``[[12x^2, 0], [0, 2]]``.
    Critical point: ``(0, 0)``, the global minimum, degenerate: Hessian ``diag(0, 2)`` has a zero
    eigenvalue along ``x`` although the point is a strict minimum (fourth-order growth).
    """
    x, y = _xy(model)
    return x**4 + y * y


def rosenbrock(model: nn.Module, batch: object = None) -> torch.Tensor:
    """``f = (1 - x)^2 + 100 (y - x^2)^2``, Rosenbrock's banana valley (Rosenbrock 1960).

    Gradient ``(-2(1 - x) - 400 x (y - x^2), 200 (y - x^2))``;
    Hessian ``[[2 - 400 y + 1200 x^2, -400 x], [-400 x, 200]]``.
    Critical point: ``(1, 1)`` only, the global minimum (``f = 0``), Hessian
    ``[[802, -400], [-400, 200]]`` with eigenvalues ``501 ± sqrt(250601)`` (about 1001.6 and
    0.3994; condition number about 2508).
    """
    x, y = _xy(model)
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


OBJECTIVES = {
    "bowl": bowl,
    "neg_bowl": neg_bowl,
    "saddle": saddle,
    "monkey_saddle": monkey_saddle,
    "cubic": cubic,
    "quartic": quartic,
    "rosenbrock": rosenbrock,
}
"""Every analytic objective by name."""
