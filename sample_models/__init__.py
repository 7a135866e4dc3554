"""Bundled sample models, their deterministic data and tiny trained checkpoints.

``landscape`` analyses these when no checkpoint is given, and the tests use them as problems with
known answers:

* ``mlp``: an 8 -> 32 -> 32 -> 4 tanh MLP (1476 parameters) trained to an approximate minimum of
  the mean cross-entropy on :func:`landscape_cli.sample_models.data.blobs` (512 rows).
* ``cnn``: a two-convolution BatchNorm CNN (1484 parameters) trained on
  :func:`landscape_cli.sample_models.data.images` (256 images of oriented stripes).
* ``transformer``: a one-block causal decoder-only transformer (2252 parameters: token and
  positional embeddings, pre-LayerNorm attention and GELU MLP, final LayerNorm, linear head)
  trained on :func:`landscape_cli.sample_models.data.tokens` (256 sequences of a second-order Markov chain), with
  the mean next-token loss :func:`landscape_cli.sample_models.transformer.next_token_loss`.
* analytic 2-D objectives (:mod:`landscape_cli.sample_models.analytic`) at known critical points, whose
  gradient and Hessian are known in closed form.

Every :class:`Sample` records the specs the CLI understands (``model``, ``data``, ``loss``), so a
sample is exactly what ``--model``, ``--data``, ``--loss`` and a checkpoint path would say. The
matching YAML files live in ``configs/<name>.yaml`` in the repository. Importing this package
is cheap: checkpoints are regenerated only by ``python -m landscape_cli.sample_models.train``.

Example:
    >>> import sample_models
    >>> sample = sample_models.get_sample("mlp")
    >>> sample.model, sample.data, sample.loss
    ('landscape_cli.sample_models.mlp:build', 'sample:blobs', 'cross_entropy')
    >>> x, y = sample_models.load_dataset("blobs")
    >>> tuple(x.shape)
    (512, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from . import analytic, cnn, mlp, transformer
from . import data as _data

__all__ = [  # the model modules too, so that `sample_models.mlp.build` resolves after one import
    "CHECKPOINT_DIR",
    "DATASETS",
    "DEFAULT_SAMPLE",
    "SAMPLES",
    "Sample",
    "analytic",
    "cnn",
    "get_sample",
    "load_dataset",
    "mlp",
    "transformer",
]

CHECKPOINT_DIR: Path = Path(__file__).resolve().parent / "checkpoints"
"""Directory of the bundled checkpoints (inside the installed package, independent of the CWD)."""


@dataclass(frozen=True)
class Sample:
    """One bundled sample: what to build, which weights to load, which data and loss to use.

    Attributes:
        name: registry key, also the name of ``configs/<name>.yaml``.
        description: one line for listings.
        model: model spec ``package.module:callable`` returning an ``nn.Module``.
        model_kwargs: keyword arguments for the model callable (read-only mapping).
        checkpoint: absolute path of the bundled ``state_dict``, or ``None`` for analytic samples
            (whose point is given by ``model_kwargs``).
        data: data spec such as ``"sample:blobs"``, or ``None`` when the loss needs no data.
        loss: ``"cross_entropy"`` or a custom-loss spec ``package.module:callable``.
    """

    name: str
    description: str
    model: str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    data: str | None = None
    loss: str = "cross_entropy"

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_kwargs", MappingProxyType(dict(self.model_kwargs)))

    def build_model(self) -> torch.nn.Module:
        """Build the model from :attr:`model` and :attr:`model_kwargs` (no weights loaded)."""
        import importlib

        module_name, _, attr = self.model.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(**self.model_kwargs)


def _point(name: str, x: float, y: float, description: str) -> Sample:
    return Sample(
        name=name,
        description=description,
        model="landscape_cli.sample_models.analytic:Point",
        model_kwargs={"x": x, "y": y},
        loss=f"landscape_cli.sample_models.analytic:{name.split('_at_')[0]}",
    )


SAMPLES: dict[str, Sample] = {
    "mlp": Sample(
        name="mlp",
        description="8-32-32-4 tanh MLP (1476 parameters) trained to an approximate minimum "
        "on 512 Gaussian-blob rows",
        model="landscape_cli.sample_models.mlp:build",
        model_kwargs={"in_features": 8, "hidden": 32, "num_classes": 4},
        checkpoint=CHECKPOINT_DIR / "mlp.pt",
        data="sample:blobs",
        loss="cross_entropy",
    ),
    "cnn": Sample(
        name="cnn",
        description="2-conv BatchNorm CNN (1484 parameters) trained on 256 3x12x12 stripe images",
        model="landscape_cli.sample_models.cnn:build",
        model_kwargs={"num_classes": 4, "width": 8},
        checkpoint=CHECKPOINT_DIR / "cnn.pt",
        data="sample:images",
        loss="cross_entropy",
    ),
    "transformer": Sample(
        name="transformer",
        description="1-block causal transformer (2252 parameters) trained on 256 sequences of "
        "12 tokens from a second-order Markov chain; next-token loss",
        model="landscape_cli.sample_models.transformer:build",
        model_kwargs={"vocab": 8, "d_model": 12, "heads": 2, "layers": 1, "context": 12},
        checkpoint=CHECKPOINT_DIR / "transformer.pt",
        data="sample:tokens",
        loss="landscape_cli.sample_models.transformer:next_token_loss",
    ),
    "bowl": _point("bowl", 0.0, 0.0, "x^2 + y^2 at its minimum (0, 0); Hessian diag(2, 2)"),
    "neg_bowl": _point(
        "neg_bowl", 0.0, 0.0, "-x^2 - y^2 at its maximum (0, 0); Hessian diag(-2, -2)"
    ),
    "saddle": _point("saddle", 0.0, 0.0, "x^2 - y^2 at its saddle (0, 0); Hessian diag(2, -2)"),
    "monkey_saddle": _point(
        "monkey_saddle", 0.0, 0.0, "x^3 - 3xy^2 at (0, 0): degenerate, Hessian zero"
    ),
    "cubic": _point(
        "cubic", 0.0, 0.0, "x^3 + 3xy - y^3 at its saddle (0, 0); Hessian eigenvalues 3, -3"
    ),
    "cubic_at_min": _point(
        "cubic_at_min", 1.0, -1.0, "x^3 + 3xy - y^3 at its local minimum (1, -1); eigenvalues 9, 3"
    ),
    "quartic": _point(
        "quartic", 0.0, 0.0, "x^4 + y^2 at its degenerate minimum (0, 0); Hessian diag(0, 2)"
    ),
    "rosenbrock": _point(
        "rosenbrock",
        1.0,
        1.0,
        "Rosenbrock at its minimum (1, 1); eigenvalues 501 ± sqrt(250601) (1001.6, 0.3994)",
    ),
    "rosenbrock_at_start": _point(
        "rosenbrock_at_start",
        -1.2,
        1.0,
        "Rosenbrock at the classic start (-1.2, 1): not a critical point (gradient norm ~233)",
    ),
}
"""Every bundled sample by name."""

DEFAULT_SAMPLE = "mlp"
"""The sample analysed when the CLI is given no checkpoint."""

DATASETS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "blobs": _data.blobs,
    "images": _data.images,
    "tokens": _data.tokens,
}
"""Dataset generators by name; ``sample:NAME`` data specs refer to these."""


def _available(names: Mapping[str, object]) -> str:
    return ", ".join(sorted(names))


def get_sample(name: str) -> Sample:
    """The registered sample ``name``.

    Raises:
        ValueError: unknown name; the message lists the available samples.
    """
    try:
        return SAMPLES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown sample {name!r}; available samples: {_available(SAMPLES)}"
        ) from None


def load_dataset(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled dataset ``name`` with its default size and seed, as ``(x, y)``.

    ``name`` is the ``NAME`` of a ``sample:NAME`` data spec; the full spec is accepted too.

    Raises:
        ValueError: unknown name; the message lists the available datasets.
    """
    key = name.removeprefix("sample:") if isinstance(name, str) else name
    try:
        generator = DATASETS[key]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown sample dataset {name!r}; available datasets: {_available(DATASETS)} "
            "(use them as --data sample:NAME)"
        ) from None
    return generator()
