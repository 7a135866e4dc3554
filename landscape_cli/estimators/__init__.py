"""Estimators on any symmetric operator with ``.shape`` and ``A @ v``: Lanczos, trace (Hutchinson,
Hutch++), spectral density (SLQ), conjugate gradient, exact dense spectra. Only torch, numpy and
the errors."""
