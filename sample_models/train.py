"""Regenerate the bundled checkpoints, deterministically: ``python -m landscape_cli.sample_models.train [--out DIR]``.

Writes four files (default directory: ``sample_models/checkpoints`` inside the package):

``mlp.pt``
    ``state_dict`` of :func:`landscape_cli.sample_models.mlp.build` trained on :func:`landscape_cli.sample_models.data.blobs`
    to an approximate minimum of the full-data mean cross-entropy: full-batch Adam, then
    full-batch L-BFGS with a strong-Wolfe line search (Nocedal & Wright 2006, alg. 7.5) in float64,
    rounded to float32. The float32 gradient norm ends near 1e-5.
``mlp_training.pt``
    a nested training checkpoint ``{"model": state_dict, "optimizer": SGD state_dict,
    "epoch": int}``: the same weights as ``mlp.pt``, the state of ``torch.optim.SGD(lr=0.1,
    momentum=0.9)`` whose momentum buffers hold the full-data gradient at those weights (what
    ``SGD.step`` stores on its first step), and ``epoch`` = the number of full-batch updates made.
``cnn.pt``
    ``state_dict`` of :func:`landscape_cli.sample_models.cnn.build` trained in train mode with minibatch Adam in a
    seeded order on :func:`landscape_cli.sample_models.data.images`; the BatchNorm running statistics are then
    recomputed exactly as the mean and unbiased variance over the whole dataset.
``transformer.pt``
    ``state_dict`` of :func:`landscape_cli.sample_models.transformer.build` trained with full-batch Adam on the
    mean next-token cross-entropy (:func:`landscape_cli.sample_models.transformer.next_token_loss`) of
    :func:`landscape_cli.sample_models.data.tokens`, stopped early (``TRANSFORMER_STEPS``) before it memorises
    the chain's noise: a trained network, not a critical point.

Determinism: a fixed seed for every initialisation and shuffle, ``torch.use_deterministic_algorithms``
and one intra-op thread while training (the previous settings and the global RNG state are
restored afterwards), so reruns give equal tensors (``torch.equal``) on the same machine and
PyTorch build. Every file loads with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import cnn, data, mlp, transformer

__all__ = ["DEFAULT_OUT", "main", "train_all", "train_cnn", "train_mlp", "train_transformer"]

DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoints"

MLP_SEED = 0
MLP_ADAM_STEPS = 1000
MLP_ADAM_LR = 1e-2
MLP_LBFGS_ROUNDS = 5
MLP_LBFGS_ITERS = 100  # L-BFGS iterations per round
MLP_GRAD_TARGET = 2e-5  # stop the L-BFGS rounds once the float64 gradient norm is below this
SGD_LR = 0.1
SGD_MOMENTUM = 0.9

CNN_SEED = 0
CNN_EPOCHS = 20
CNN_BATCH = 32
CNN_LR = 3e-3

TRANSFORMER_SEED = 0
TRANSFORMER_STEPS = 200  # early stop: held-out loss is lowest near here, later steps memorise
TRANSFORMER_LR = 1e-2


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """One thread, deterministic kernels, float32 default dtype; restore everything on exit."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    dtype = torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
        torch.set_default_dtype(dtype)


def _flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def full_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy over ``(x, y)`` and its gradient (flattened), leaving ``.grad`` set."""
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.item(), _flat_grad(model)


def train_mlp() -> tuple[nn.Module, dict[str, Any]]:
    """Train the MLP sample on ``blobs()``; returns the float32 model and a dict of statistics.

    Phase 1, ``MLP_ADAM_STEPS`` full-batch Adam steps (Kingma & Ba 2015) in float32, finds the
    basin; phase 2, rounds of full-batch L-BFGS in float64, polishes the gradient, which float32
    arithmetic alone cannot push much below 1e-4. The loss cannot reach zero: ``blobs`` repeats
    each input with two labels that sometimes disagree (see :func:`landscape_cli.sample_models.data.blobs`).
    """
    x, y = data.blobs()
    torch.manual_seed(MLP_SEED)
    model = mlp.build()
    adam = torch.optim.Adam(model.parameters(), lr=MLP_ADAM_LR)
    for _ in range(MLP_ADAM_STEPS):
        adam.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        adam.step()
    updates = MLP_ADAM_STEPS

    model.double()
    x64 = x.double()
    lbfgs = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=MLP_LBFGS_ITERS,
        history_size=50,
        tolerance_grad=1e-12,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        lbfgs.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x64), y)
        loss.backward()
        return loss

    for _ in range(MLP_LBFGS_ROUNDS):
        lbfgs.step(closure)
        _, grad64 = full_gradient(model, x64, y)
        if grad64.norm().item() < MLP_GRAD_TARGET:
            break
    updates += lbfgs.state[next(model.parameters())]["n_iter"]
    model.float()
    model.zero_grad(set_to_none=True)

    loss, grad = full_gradient(model, x, y)
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).double().mean().item()
    stats = {
        "loss": loss,
        "grad_norm": grad.norm().item(),
        "accuracy": accuracy,
        "updates": updates,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, stats


def training_checkpoint(model: nn.Module, epoch: int) -> dict[str, Any]:
    """``{"model", "optimizer", "epoch"}`` with an SGD(lr=0.1, momentum=0.9) state for ``model``.

    The momentum buffers are the full-data gradient at the current weights: the buffer
    ``SGD.step`` stores on its first step. The weights are not changed.
    """
    x, y = data.blobs()
    full_gradient(model, x, y)
    sgd = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)
    for p in model.parameters():
        sgd.state[p]["momentum_buffer"] = p.grad.detach().clone()
    model.zero_grad(set_to_none=True)
    return {"model": model.state_dict(), "optimizer": sgd.state_dict(), "epoch": epoch}


def train_cnn() -> tuple[nn.Module, dict[str, Any]]:
    """Train the CNN sample on ``images()``; returns the model (eval mode) and statistics.

    ``CNN_EPOCHS`` epochs of minibatch Adam in train mode (BatchNorm on batch statistics), the
    minibatch order drawn from a seeded generator, then the BatchNorm running statistics are
    replaced by the exact full-data statistics (cumulative average, ``momentum=None``).
    """
    x, y = data.images()
    torch.manual_seed(CNN_SEED)
    model = cnn.build()
    adam = torch.optim.Adam(model.parameters(), lr=CNN_LR)
    order_gen = torch.Generator().manual_seed(CNN_SEED)
    model.train()
    for _ in range(CNN_EPOCHS):
        order = torch.randperm(x.shape[0], generator=order_gen)
        for start in range(0, x.shape[0], CNN_BATCH):
            idx = order[start : start + CNN_BATCH]
            adam.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            adam.step()

    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: one full batch gives its exact statistics
    with torch.no_grad():
        model(x)
    for bn in batchnorms:
        bn.momentum = 0.1
    model.eval()

    model.zero_grad(set_to_none=True)
    loss, grad = full_gradient(model, x, y)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).double().mean().item()
    stats = {
        "loss": loss,
        "grad_norm": grad.norm().item(),
        "accuracy": accuracy,
        "updates": CNN_EPOCHS * -(-x.shape[0] // CNN_BATCH),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, stats


def train_transformer() -> tuple[nn.Module, dict[str, Any]]:
    """Train the transformer sample on ``tokens()``; returns the model and statistics.

    ``TRANSFORMER_STEPS`` full-batch Adam steps (Kingma & Ba 2015) on the mean next-token
    cross-entropy over all 256 x 12 positions. The best possible loss is the chain's entropy
    rate (about 0.35 nats, :func:`landscape_cli.sample_models.data.tokens`); 256 sequences are few enough that
    longer training memorises their noise (training loss below that floor, held-out loss rising),
    so training stops early. ``accuracy`` is the next-token accuracy over all positions.
    """
    x, y = data.tokens()
    torch.manual_seed(TRANSFORMER_SEED)
    model = transformer.build()
    adam = torch.optim.Adam(model.parameters(), lr=TRANSFORMER_LR)
    for _ in range(TRANSFORMER_STEPS):
        adam.zero_grad(set_to_none=True)
        transformer.next_token_loss(model, (x, y)).backward()
        adam.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    loss = transformer.next_token_loss(model, (x, y))
    loss.backward()
    grad = _flat_grad(model)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=-1) == y).double().mean().item()
    stats = {
        "loss": loss.item(),
        "grad_norm": grad.norm().item(),
        "accuracy": accuracy,
        "updates": TRANSFORMER_STEPS,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, stats


def train_all(out_dir: Path | str = DEFAULT_OUT) -> dict[str, dict[str, Any]]:
    """Train the samples; write ``mlp.pt``, ``mlp_training.pt``, ``cnn.pt``, ``transformer.pt``.

    Returns per-model statistics (eval-mode loss, gradient norm and accuracy on the training data,
    number of updates, parameter count).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with deterministic():
        mlp_model, mlp_stats = train_mlp()
        torch.save(mlp_model.state_dict(), out / "mlp.pt")
        torch.save(training_checkpoint(mlp_model, mlp_stats["updates"]), out / "mlp_training.pt")
        cnn_model, cnn_stats = train_cnn()
        torch.save(cnn_model.state_dict(), out / "cnn.pt")
        tf_model, tf_stats = train_transformer()
        torch.save(tf_model.state_dict(), out / "transformer.pt")
    return {"mlp": mlp_stats, "cnn": cnn_stats, "transformer": tf_stats}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints one summary line per model."""
    parser = argparse.ArgumentParser(
        prog="python -m landscape_cli.sample_models.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    stats = train_all(args.out)
    for name, s in stats.items():
        print(
            f"{name}: {s['parameters']} parameters, loss {s['loss']:.6f}, "
            f"grad norm {s['grad_norm']:.3e}, accuracy {s['accuracy']:.3f}, "
            f"{s['updates']} updates"
        )
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
