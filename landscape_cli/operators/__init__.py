"""Matrix-free operators of an objective: the Hessian, the generalised Gauss-Newton matrix, the
empirical Fisher, parameter blocks, the exact per-sample trace, and the Jacobian Gram and NTK."""
