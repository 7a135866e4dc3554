"""Estimators on any symmetric operator (:class:`~landscape_cli.linear_operator.OperatorLike`: a
dense tensor or a :class:`~landscape_cli.linear_operator.SymmetricOperator`): Lanczos, trace
(Hutchinson, Hutch++), spectral density (SLQ), conjugate gradient, exact dense spectra. Only
torch, numpy, the errors and the operator module."""
