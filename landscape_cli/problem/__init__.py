"""The problem: data, checkpoints and models, losses, and the objective built from them."""
