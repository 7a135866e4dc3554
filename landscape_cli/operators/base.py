"""The base of the curvature operators of an objective."""

from __future__ import annotations

from ..linear_operator import SymmetricOperator
from ..problem.objective import Objective


class CurvatureOperator(SymmetricOperator):
    """A curvature matrix of an :class:`Objective` (the Hessian here; the generalised
    Gauss-Newton matrix and the empirical Fisher in :mod:`landscape_cli.operators.curvature`):
    an ``n × n`` :class:`~landscape_cli.linear_operator.SymmetricOperator` in the objective's
    dtype and on its device, ``n`` its number of trainable parameters. A non-finite product is a
    :class:`~landscape_cli.errors.NumericalError`. :meth:`fresh` twins share what the operator
    keeps between products (the GGN's per-batch graphs, the empirical Fisher's per-sample
    gradients), so per-layer blocks neither rebuild nor duplicate them; :meth:`release` drops
    it, while the Hessian's gradient graph belongs to the objective and stays.
    """

    non_finite_hint = "the outputs or the loss overflow here; try `dtype=float64`"

    def __init__(self, objective: Objective) -> None:
        super().__init__(objective.num_parameters, objective.dtype, objective.device)
        self.objective = objective
