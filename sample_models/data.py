"""Deterministic synthetic datasets for the bundled sample models.

Every draw comes from an explicit CPU ``torch.Generator`` in float64; the result is returned as
``(x, y)`` with ``x`` float32 and ``y`` int64 labels, so the data do not depend on the device the
caller later moves them to.

Each dataset has a fixed *distribution* (cluster centres, stripe orientations) drawn from a
constant seed; the ``seed`` argument only chooses the samples. ``blobs(seed=1)`` is therefore a
held-out set from the same distribution as the default ``blobs(seed=0)``.

Example:
    >>> x, y = blobs()
    >>> x.shape, x.dtype, y.shape, y.dtype
    (torch.Size([512, 8]), torch.float32, torch.Size([512]), torch.int64)
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "BLOBS_FEATURES",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "TOKEN_CONTEXT",
    "TOKEN_VOCAB",
    "blobs",
    "images",
    "token_transitions",
    "tokens",
]

NUM_CLASSES = 4
BLOBS_FEATURES = 8
IMAGE_SHAPE = (3, 12, 12)

# Seed of the fixed distribution (cluster centres); independent of the per-call sample seed.
_DISTRIBUTION_SEED = 20_240_601
_CLUSTERS_PER_CLASS = 2
_CENTRE_SCALE = 1.0
_BLOB_NOISE = 1.0

TOKEN_VOCAB = 8
TOKEN_CONTEXT = 12
_TOKEN_PEAK = 0.97  # probability of the preferred next token of each (previous, current) pair

_STRIPE_JITTER = 0.2  # radians of orientation noise per image
_IMAGE_NOISE = 0.9


def _check_args(num_samples: int, seed: int) -> None:
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")


def _balanced_labels(num_samples: int, gen: torch.Generator) -> torch.Tensor:
    """Labels ``0..NUM_CLASSES-1`` in equal shares (up to one), in a seeded random order."""
    labels = torch.arange(num_samples, dtype=torch.int64) % NUM_CLASSES
    return labels[torch.randperm(num_samples, generator=gen)]


def blobs(num_samples: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 4-class, 8-feature Gaussian-mixture set, each input labelled twice, not linearly separable.

    Generative model: class ``c`` uniform (balanced), cluster ``k`` uniform in ``{0, 1}``, and
    ``x ~ N(mu_{c,k}, sigma^2 I)`` with ``sigma = 1``; the eight centres ``mu_{c,k} ~ N(0, I_8)``
    are drawn once from a fixed seed. Every class owns two separated clusters, so no linear
    classifier fits it, and neighbouring clusters of different classes overlap.

    Each of the ``ceil(n / 2)`` drawn inputs appears **twice**: once with its generating class
    ``c`` and once with a second opinion drawn from the Bayes posterior

        ``p(c' | x) = sum_k exp(-|x - mu_{c',k}|^2 / 2 sigma^2) / sum_{c'', k} (same)``,

    like two annotators who disagree where the classes overlap (the rows are then shuffled and the
    first ``n`` kept). Overlap alone does not keep the training loss away from zero: an MLP with
    more parameters than samples memorises continuous data and the cross-entropy then has no
    minimiser. With duplicated inputs whose labels disagree, identical inputs must receive the
    same prediction, so the mean cross-entropy is bounded below by ``(d / n) * 2 log 2`` (``d``
    disagreeing pairs; the optimum predicts 1/2 for each of the two labels); that floor is
    positive, and training reaches an approximate minimum with an informative Hessian.

    Args:
        num_samples: number of rows ``n``.
        seed: seed of the sample draw (the centres do not depend on it).

    Returns:
        ``x`` of shape ``(n, 8)`` float32 and ``y`` of shape ``(n,)`` int64 in ``{0, 1, 2, 3}``.
    """
    _check_args(num_samples, seed)
    f64 = torch.float64
    centre_gen = torch.Generator().manual_seed(_DISTRIBUTION_SEED)
    centres = _CENTRE_SCALE * torch.randn(
        NUM_CLASSES, _CLUSTERS_PER_CLASS, BLOBS_FEATURES, generator=centre_gen, dtype=f64
    )
    gen = torch.Generator().manual_seed(seed)
    num_points = (num_samples + 1) // 2
    label = _balanced_labels(num_points, gen)
    cluster = torch.randint(0, _CLUSTERS_PER_CLASS, (num_points,), generator=gen)
    noise = torch.randn(num_points, BLOBS_FEATURES, generator=gen, dtype=f64)
    x = centres[label, cluster] + _BLOB_NOISE * noise
    # Bayes posterior over classes: log-sum-exp over each class's clusters, softmax over classes.
    sq_dist = (x[:, None, None, :] - centres[None]).square().sum(dim=-1)  # (m, classes, clusters)
    log_class = torch.logsumexp(-sq_dist / (2 * _BLOB_NOISE**2), dim=2)
    second = torch.multinomial(torch.softmax(log_class, dim=1), 1, generator=gen).squeeze(1)
    order = torch.randperm(2 * num_points, generator=gen)[:num_samples]
    x_all = torch.cat([x, x])[order]
    y_all = torch.cat([label, second])[order]
    return x_all.to(torch.float32), y_all


def images(num_samples: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 3x12x12 "images" of oriented stripes in 4 classes, plus Gaussian noise.

    Class ``c`` is the stripe orientation ``theta_c = c * pi / 4`` (horizontal, diagonal, vertical,
    anti-diagonal), jittered per image by ``N(0, 0.2^2)`` radians. Image ``i`` at pixel ``(r, q)``
    and channel ``ch`` is

        ``a_{i,ch} * cos(f_i * (r cos theta_i + q sin theta_i) + phi_i) + 0.9 * eps``,

    with spatial frequency ``f_i ~ U(1.0, 1.6)`` rad/pixel, phase ``phi_i ~ U(0, 2 pi)``, a random
    colour ``a_{i,ch} ~ U(0.5, 1.5)`` and white noise ``eps ~ N(0, 1)``. Only the orientation
    carries the label, which a small CNN learns from local 3x3 filters. The four classes are
    balanced (``n // 4`` images each, the remainder to the first classes) and shuffled.

    Args:
        num_samples: number of images ``n``.
        seed: seed of the draw.

    Returns:
        ``x`` of shape ``(n, 3, 12, 12)`` float32 and ``y`` of shape ``(n,)`` int64.
    """
    _check_args(num_samples, seed)
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    channels, height, width = IMAGE_SHAPE
    y = _balanced_labels(num_samples, gen)
    theta = y.to(f64) * (math.pi / 4) + _STRIPE_JITTER * torch.randn(
        num_samples, generator=gen, dtype=f64
    )
    freq = 1.0 + 0.6 * torch.rand(num_samples, generator=gen, dtype=f64)
    phase = 2 * math.pi * torch.rand(num_samples, generator=gen, dtype=f64)
    colour = 0.5 + torch.rand(num_samples, channels, generator=gen, dtype=f64)
    noise = torch.randn(num_samples, channels, height, width, generator=gen, dtype=f64)

    rows = torch.arange(height, dtype=f64).view(1, height, 1)
    cols = torch.arange(width, dtype=f64).view(1, 1, width)
    proj = rows * torch.cos(theta).view(-1, 1, 1) + cols * torch.sin(theta).view(-1, 1, 1)
    stripes = torch.cos(freq.view(-1, 1, 1) * proj + phase.view(-1, 1, 1))  # (n, H, W)
    x = colour.view(-1, channels, 1, 1) * stripes.unsqueeze(1) + _IMAGE_NOISE * noise
    return x.to(torch.float32), y


def token_transitions() -> torch.Tensor:
    """The fixed second-order transition table ``P[a, b, c] = p(s_{t+1} = c | s_{t-1} = a, s_t = b)``.

    For every pair ``(a, b)`` one preferred next token ``c*(a, b)``, drawn once from a fixed seed,
    has probability 0.9 and the other ``V - 1`` tokens share the remaining 0.1 equally. Returns a
    float64 tensor of shape ``(V, V, V)`` whose last axis sums to one.
    """
    gen = torch.Generator().manual_seed(_DISTRIBUTION_SEED + 1)
    v = TOKEN_VOCAB
    preferred = torch.randint(0, v, (v, v), generator=gen)
    table = torch.full((v, v, v), (1 - _TOKEN_PEAK) / (v - 1), dtype=torch.float64)
    table.scatter_(2, preferred.unsqueeze(2), _TOKEN_PEAK)
    return table


def tokens(num_samples: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of a seeded second-order Markov chain over 8 tokens, for next-token prediction.

    Each sequence ``s_0, ..., s_T`` (``T = 12``) starts with two uniform tokens and continues with
    ``s_{t+1} ~ P[s_{t-1}, s_t]`` (:func:`token_transitions`): the next token is predictable (90 %)
    from the *two* latest tokens but not from the latest one alone, so a model must attend to the
    previous position, which a causal self-attention layer learns. The inputs are ``x = s_0..s_{T-1}``
    and the targets the next tokens ``y = s_1..s_T``. The best possible mean next-token
    cross-entropy is the entropy rate: ``log 8`` at the first position (``s_1`` is uniform and
    independent of ``s_0``) and ``H(P[a, b]) = -0.9 log 0.9 - 0.1 log(0.1 / 7) ~ 0.52`` nats at
    the others.

    Args:
        num_samples: number of sequences ``n``.
        seed: seed of the draw (the transition table does not depend on it).

    Returns:
        ``x`` and ``y``, both of shape ``(n, 12)`` int64 in ``{0, ..., 7}``.
    """
    _check_args(num_samples, seed)
    table = token_transitions()
    gen = torch.Generator().manual_seed(seed)
    seq = torch.empty(num_samples, TOKEN_CONTEXT + 1, dtype=torch.int64)
    seq[:, :2] = torch.randint(0, TOKEN_VOCAB, (num_samples, 2), generator=gen)
    for t in range(2, TOKEN_CONTEXT + 1):
        probs = table[seq[:, t - 2], seq[:, t - 1]]
        seq[:, t] = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    return seq[:, :-1].clone(), seq[:, 1:].clone()
