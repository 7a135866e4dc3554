"""Products with a layer's per-sample gradients, without holding them all: what K-FAC's
quality needs of the GGN (:func:`landscape_cli.operators.kfac.kronecker_factors`).

For a layer applied at ``R`` positions per sample, inputs ``ā_nr`` and output gradients ``b_nrc``
(one per column ``c`` of the output Hessian's square root), sample ``n``'s gradient for column
``c`` is ``M_nc = Σ_r b_nrc ā_nrᵀ`` and the layer's GGN block is ``(1/N) Σ_n Σ_c vec(M_nc)
vec(M_nc)ᵀ``: its products with probes, its trace and the coupling between layers follow from
inner products ``⟨M_nc, Z⟩`` and sums ``Σ w M_nc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PER_SAMPLE_CHUNK", "ProbeProducts", "SampleGradients", "probe_pass"]


#: Floats of per-sample gradients held at once when probes are multiplied (chunks of samples).
PER_SAMPLE_CHUNK = 1 << 26


@dataclass
class ProbeProducts:
    """Products of the GGN with probes ``Z`` given to :func:`kronecker_factors`, in each layer's
    matrix layout ``[W | b]`` (``(m, out, d)`` per layer): ``own[l] = GGN_ll Z_l`` (the layer's
    diagonal block) and ``joint[l] = (GGN_cc Z)_l`` (the block of all covered parameters applied
    to all layers' probes at once); ``traces[l] = tr(GGN_ll) = (1/N) Σ_n Σ_c ‖M_nc‖²``, exact."""

    own: list[torch.Tensor]
    joint: list[torch.Tensor]
    traces: list[float]


def _per_sample_gradients(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``M_n = Σ_r b_nr ā_nrᵀ``: ``(n_b, out, d)`` from rows ``(n_b, R, d)`` and ``(n_b, R, out)``."""
    return b.transpose(1, 2) @ a


def probe_pass(
    rows: list[tuple[torch.Tensor, list[torch.Tensor]]],
    probes: list[torch.Tensor],
    own: list[torch.Tensor],
    joint: list[torch.Tensor],
    traces: list[torch.Tensor],
    scale: float,
) -> None:
    """Add ``scale · Σ_n Σ_c M_nc ⟨M_nc, Z⟩`` to ``own`` (each layer's own probe) and ``joint``
    (all layers' probes together), and ``scale · Σ_n Σ_c ‖M_nc‖²`` to ``traces``, ``M_nc`` the
    per-sample gradients of one batch: a first sweep takes every ``⟨M_nc, Z_l⟩`` (the joint
    products need their sum over the layers before any is added), a second adds both products
    (:class:`SampleGradients`)."""
    layers = [SampleGradients(a, bs) for a, bs in rows]
    inner = []
    for layer, Z, trace in zip(layers, probes, traces, strict=True):
        values, norms = layer.inner(Z)
        inner.append(values)
        trace += scale * norms
    total = sum(inner)
    for i, layer in enumerate(layers):
        m = probes[i].shape[0]
        products = layer.combine(torch.cat([inner[i], total]))  # (2m, out·d)
        own[i] += scale * products[:m].reshape(own[i].shape)
        joint[i] += scale * products[m:].reshape(joint[i].shape)


class SampleGradients:
    """A layer's per-sample gradients ``M_nc = Σ_r b_nrc ā_nrᵀ`` in one batch, from the rows
    ``ā`` ``(n_b, R, d)`` and ``b_c`` ``(n_b, R, out)`` per output-Hessian column ``c``, never
    all held at once. With ``m`` probes and ``C`` columns, forming each ``M_nc`` costs about
    ``C (R + m)`` multiply-adds per sample and weight, going through ``Z ā_nr`` instead about
    ``m R``: each product takes the cheaper way (the second for the few positions of a linear
    layer or a late convolution), unless ``through_probes`` says which. Work is done in chunks
    of samples holding at most :data:`PER_SAMPLE_CHUNK` floats."""

    def __init__(
        self, a: torch.Tensor, bs: list[torch.Tensor], through_probes: bool | None = None
    ) -> None:
        self.a, self.bs = a, bs
        self.n, self.R, self.d = a.shape
        self.out = bs[0].shape[2] if bs else 0
        self.through_probes = through_probes

    def _through_probes(self, m: int) -> bool:
        if self.through_probes is not None:
            return self.through_probes
        return m * self.R < len(self.bs) * (self.R + m)

    def _chunks(self, floats_per_sample: int):
        step = max(1, PER_SAMPLE_CHUNK // max(1, floats_per_sample))
        for lo in range(0, self.n, step):
            yield lo, min(lo + step, self.n)

    def inner(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(⟨M_nc, Z_j⟩`` as ``(m, C, n_b)``, ``Σ_n Σ_c ‖M_nc‖²)``."""
        m, C = Z.shape[0], len(self.bs)
        values = Z.new_zeros(m, C, self.n)
        norm = Z.new_zeros(())
        if self._through_probes(m):
            for lo, hi in self._chunks(m * self.R * self.out):
                a = self.a[lo:hi]
                Za = torch.einsum("mod,nrd->mnro", Z, a)
                gram_a = a @ a.transpose(1, 2)  # (k, R, R)
                for c, b in enumerate(self.bs):
                    values[:, c, lo:hi] = torch.einsum("nro,mnro->mn", b[lo:hi], Za)
                    norm += (gram_a * (b[lo:hi] @ b[lo:hi].transpose(1, 2))).sum()
            return values, norm
        flat = Z.flatten(1)
        for lo, hi in self._chunks(self.out * self.d):
            for c, b in enumerate(self.bs):
                M = _per_sample_gradients(self.a[lo:hi], b[lo:hi]).flatten(1)
                values[:, c, lo:hi] = flat @ M.T
                norm += (M * M).sum()
        return values, norm

    def squares(self) -> torch.Tensor:
        """``Σ_n Σ_c M_nc ∘ M_nc`` ``(out, d)``: for one position ``(b ∘ b)ᵀ (ā ∘ ā)``, else
        from the per-sample gradients."""
        total = self.a.new_zeros(self.out, self.d)
        if self.R == 1:
            a2 = self.a[:, 0] ** 2
            for b in self.bs:
                total += (b[:, 0] ** 2).T @ a2
            return total
        for lo, hi in self._chunks(self.out * self.d):
            for b in self.bs:
                M = _per_sample_gradients(self.a[lo:hi], b[lo:hi])
                total += (M * M).sum(0)
        return total

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``Σ_n Σ_c coefficients[j, c, n] M_nc`` for every ``j``, as ``(J, out·d)``."""
        J = coefficients.shape[0]
        products = coefficients.new_zeros(J, self.out * self.d)
        if self._through_probes(J // 2):
            for lo, hi in self._chunks(J * self.R * self.out):
                w = sum(
                    coefficients[:, c, lo:hi, None, None] * b[lo:hi][None]
                    for c, b in enumerate(self.bs)
                )  # (J, k, R, out)
                rows = w.permute(0, 3, 1, 2).reshape(J * self.out, -1)
                part = rows @ self.a[lo:hi].reshape(-1, self.d)  # (J·out, d)
                products += part.reshape(J, -1)
            return products
        for lo, hi in self._chunks(self.out * self.d):
            for c, b in enumerate(self.bs):
                M = _per_sample_gradients(self.a[lo:hi], b[lo:hi]).flatten(1)
                products.addmm_(coefficients[:, c, lo:hi], M)
        return products
