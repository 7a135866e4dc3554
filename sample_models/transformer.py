"""The bundled transformer sample: a tiny causal decoder-only language model, and its loss.

Architecture (GPT-2 style, Radford et al. 2019; attention from Vaswani et al. 2017):
token embedding + learned positional embedding, ``layers`` pre-LayerNorm blocks

    ``h = h + Attn(LN_1(h))``,  ``h = h + W_2 GELU(W_1 LN_2(h) + b_1) + b_2``,

a final LayerNorm and a linear head to ``vocab`` logits. ``Attn`` is causal multi-head
self-attention written with plain tensor operations,

    ``softmax(Q K^T / sqrt(d_head) + M) V``,  ``M_{ij} = -inf`` for ``j > i``,

rather than ``torch.nn.functional.scaled_dot_product_attention``: on CPU (torch 2.13) the fused
kernel has neither a double backward ("derivative for
aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented") nor forward-mode
derivatives, so create-graph Hessian-vector products and ``torch.func.hessian`` fail through it;
plain operations support both on every device and dtype. All nonlinearities (softmax, LayerNorm,
exact GELU) are smooth, so the Hessian is well defined everywhere.

With the defaults (vocab 8, d_model 12, 2 heads, 1 layer, context 12) the model has
``(8 + 12) * 12`` embedding, ``12 * 12^2 + 13 * 12 = 1884`` block, ``2 * 12`` final-LayerNorm and
``13 * 8`` head parameters, 2252 in all (:func:`num_parameters`): few enough for an exact dense
Hessian. (A width-scaled copy, ``build(d_model=...)``, is what ``benchmarks/scaling.py`` times.)

Example:
    >>> import torch
    >>> model = build()
    >>> sum(p.numel() for p in model.parameters())
    2252
    >>> tokens = torch.zeros(2, 12, dtype=torch.int64)
    >>> tuple(model(tokens).shape)
    (2, 12, 8)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Block", "CausalSelfAttention", "TinyTransformer", "build", "next_token_loss"]


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention: one fused ``d -> 3d`` projection for Q, K, V, then
    ``softmax(Q K^T / sqrt(d_head) + M) V`` per head and an output projection ``d -> d``."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` of shape ``(N, T, d)`` -> ``(N, T, d)``; position ``i`` attends to ``j <= i``."""
        n, t, d = h.shape
        q, k, v = self.qkv(h).split(d, dim=-1)
        # (N, heads, T, d_head)
        q, k, v = (z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        future = torch.ones(t, t, dtype=torch.bool, device=h.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal attention and a GELU MLP, each residual."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.ln1(h))
        return h + self.mlp(self.ln2(h))


class TinyTransformer(nn.Module):
    """Decoder-only transformer: tokens ``(N, T)`` int64 -> next-token logits ``(N, T, vocab)``."""

    def __init__(self, vocab: int, d_model: int, heads: int, layers: int, context: int) -> None:
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, heads) for _ in range(layers)))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[-1]
        if t > self.context:
            raise ValueError(f"sequence length {t} exceeds the context {self.context}")
        positions = torch.arange(t, device=tokens.device)
        h = self.tok(tokens) + self.pos(positions)
        return self.head(self.ln_f(self.blocks(h)))


def num_parameters(
    vocab: int = 8, d_model: int = 12, heads: int = 2, layers: int = 1, context: int = 12
) -> int:
    """Closed-form parameter count of :func:`build` (``heads`` does not change it).

    Embeddings ``(V + T) d``; per block two LayerNorms ``4 d``, attention ``3 d^2 + 3 d + d^2 + d``
    and MLP ``4 d^2 + 4 d + 4 d^2 + d``; final LayerNorm ``2 d``; head ``d V + V``.
    """
    del heads
    block = 4 * d_model + 4 * d_model**2 + 4 * d_model + 8 * d_model**2 + 5 * d_model
    return (vocab + context) * d_model + layers * block + 2 * d_model + (d_model + 1) * vocab


def build(
    vocab: int = 8, d_model: int = 12, heads: int = 2, layers: int = 1, context: int = 12
) -> nn.Module:
    """A :class:`TinyTransformer` with PyTorch's default initialisation (global RNG).

    Seed it with ``torch.manual_seed`` for a reproducible initialisation.

    Raises:
        ValueError: a size below 1, or ``d_model`` not divisible by ``heads``.
    """
    for name, value in (
        ("vocab", vocab),
        ("d_model", d_model),
        ("heads", heads),
        ("layers", layers),
        ("context", context),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    return TinyTransformer(vocab, d_model, heads, layers, context)


def next_token_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of every sequence in the batch.

    ``batch = (x, y)`` with tokens ``x`` and next tokens ``y``, both ``(N, T)`` int64; the model
    maps ``x`` to logits ``(N, T, V)`` and the loss is ``(1 / N T) sum_{i, t} -log softmax(
    logits_{i,t})[y_{i,t}]``. (The built-in ``cross_entropy`` loss expects ``(N, C)`` logits: on
    ``(N, T, V)`` it would read ``T`` as the class dimension.) The custom-loss signature is the
    project's ``fn(model, batch) -> scalar``; batches are equal-length sequences, so the batch
    mean weighted by ``n_b / N`` is the mean over all tokens.
    """
    if batch is None:
        raise ValueError("next_token_loss needs data: (tokens, next tokens)")
    x, y = batch[0], batch[1]
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
