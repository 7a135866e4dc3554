"""Matrix-free curvature operators of an objective: the Hessian, the generalised Gauss-Newton
matrix, the empirical Fisher, parameter blocks, and the exact per-sample trace."""
