"""Tests of the bundled transformer sample: token data, model, loss, checkpoint and its spectrum.

Expected values are computed independently of the code under test: the transition table from its
definition, the next-token loss from an explicit log-softmax, causality by perturbing future
tokens, and the exact Hessian by double backward through the model's own parameters (float64),
whose ``eigvalsh`` is the reference for ``landscape spectrum``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from landscape_cli.sample_models import data, train, transformer
from torch.func import functional_call, grad, jacfwd
from typer.testing import CliRunner

from landscape_cli import sample_models
from landscape_cli.cli import app

# torch.func forward mode makes torch script its JVP decompositions on first use.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

F64 = torch.float64
EXACT_SAMPLES = 64  # sequences in the exact-Hessian check: 2252 double backwards stay ~10 s


def _trained() -> torch.nn.Module:
    sample = sample_models.get_sample("transformer")
    model = sample.build_model()
    model.load_state_dict(torch.load(sample.checkpoint, weights_only=True), strict=True)
    return model.eval()


def _reference_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over every (sequence, position) of -log softmax(logits)[next token], written out."""
    logp = torch.log_softmax(model(x), dim=-1)  # (N, T, V)
    return -logp.gather(-1, y.unsqueeze(-1)).mean()


# --- data ---------------------------------------------------------------------------------------


def test_tokens_shapes_shift_and_determinism() -> None:
    x, y = data.tokens()
    assert x.shape == y.shape == (256, 12) and x.dtype == y.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < 8 and set(y.unique().tolist()) == set(range(8))
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one position
    x2, y2 = data.tokens()
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, data.tokens(seed=1)[0])
    assert data.tokens(5, seed=2)[0].shape == (5, 12)
    with pytest.raises(ValueError, match="num_samples"):
        data.tokens(0)


def test_token_chain_follows_its_transition_table() -> None:
    table = data.token_transitions()
    assert table.shape == (8, 8, 8)
    torch.testing.assert_close(table.sum(-1), torch.ones(8, 8, dtype=F64), rtol=0, atol=1e-15)
    assert torch.equal(table.max(-1).values, torch.full((8, 8), 0.97, dtype=F64))
    x, y = data.tokens(4096, seed=3)
    # Second-order transitions (s_{t-1}, s_t) -> s_{t+1} from position 1 on: the preferred token
    # follows with probability 0.97. 4096 * 11 draws: binomial standard error 0.0008, bound 5 se.
    prev, cur, nxt = x[:, :-1], x[:, 1:], y[:, 1:]
    hit = (nxt == table.argmax(-1)[prev, cur]).double().mean().item()
    assert abs(hit - 0.97) < 0.004
    # The first target is uniform and independent of the first token: the chain needs attention.
    first = (y[:, 0] == table.argmax(-1)[x[:, 0], x[:, 0]]).double().mean().item()
    assert first < 0.2


# --- model and loss -----------------------------------------------------------------------------


def test_parameter_count_and_shapes() -> None:
    model = transformer.build()
    n = sum(p.numel() for p in model.parameters())
    d, v, t = 12, 8, 12
    block = (
        2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
    )
    assert n == (v + t) * d + block + 2 * d + (d * v + v) == 2252
    assert transformer.num_parameters() == n
    kwargs = {"vocab": 5, "d_model": 8, "heads": 4, "layers": 2, "context": 6}
    assert transformer.num_parameters(**kwargs) == sum(
        p.numel() for p in transformer.build(**kwargs).parameters()
    )
    assert transformer.build(**kwargs)(torch.zeros(3, 4, dtype=torch.int64)).shape == (3, 4, 5)
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"Embedding", "LayerNorm", "GELU", "CausalSelfAttention"} <= kinds


@pytest.mark.parametrize("bad", [{"d_model": 0}, {"heads": 5}, {"layers": 0}, {"vocab": 1.5}])
def test_build_rejects_bad_sizes(bad: dict) -> None:
    with pytest.raises(ValueError):
        transformer.build(**bad)


def test_too_long_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="context"):
        transformer.build()(torch.zeros(1, 13, dtype=torch.int64))


def test_attention_is_causal() -> None:
    torch.manual_seed(1)
    model = transformer.build().double().eval()
    x, _ = data.tokens(4)
    changed = x.clone()
    changed[:, 7:] = (changed[:, 7:] + 3) % 8
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.equal(a[:, :7], b[:, :7])  # positions before 7 never see tokens 7..11
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_next_token_loss_is_the_mean_over_all_positions() -> None:
    torch.manual_seed(2)
    model = transformer.build().double()
    x, y = data.tokens(16)
    torch.testing.assert_close(
        transformer.next_token_loss(model, (x, y)), _reference_loss(model, x, y), rtol=1e-14, atol=0
    )
    with pytest.raises(ValueError, match="needs data"):
        transformer.next_token_loss(model, None)


def test_func_hessian_and_double_backward_agree_through_attention() -> None:
    """Forward-over-reverse ``jacfwd(grad(loss))`` over functional_call and create-graph double
    backward both work through the attention, LayerNorm and GELU, and agree in float64.

    Not ``torch.func.hessian``: it is ``jacfwd(jacrev(loss))``, and in torch 2.13 an outer
    transform over ``jacrev`` of a scalar through ``F.layer_norm`` gets the rows of the LayerNorm
    weights wrong (errors ~0.1 here, also with ``jacrev(jacrev(loss))``), while ``jacfwd(grad)``,
    ``jacrev(grad)``, ``vmap(jvp(grad))`` and double backward agree with finite differences.
    """
    torch.manual_seed(3)
    kwargs = {"vocab": 3, "d_model": 4, "heads": 2, "layers": 1, "context": 3}
    model = transformer.build(**kwargs).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (5, 3), generator=gen)
    y = torch.randint(0, 3, (5, 3), generator=gen)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(w: torch.Tensor) -> torch.Tensor:
        params = {n: t.reshape(s) for n, t, s in zip(names, w.split(sizes), shapes, strict=True)}
        logits = functional_call(model, params, (x,))
        return F.cross_entropy(logits.reshape(-1, 3), y.reshape(-1))

    h_func = jacfwd(grad(loss))(w0)
    h_double = _dense_hessian(model, x, y)
    # Two exact float64 derivative programs: agreement to round-off.
    torch.testing.assert_close(h_func, h_double, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h_func, h_func.T, rtol=1e-10, atol=1e-12)


# --- checkpoint ---------------------------------------------------------------------------------


def test_checkpoint_is_small_float32_and_trained() -> None:
    sample = sample_models.get_sample("transformer")
    assert sample.checkpoint is not None and sample.checkpoint.stat().st_size < 200_000
    state = torch.load(sample.checkpoint, weights_only=True)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in state.values())
    model = _trained()
    x, y = data.tokens()
    xt, yt = data.tokens(2048, seed=1)
    with torch.no_grad():
        loss = _reference_loss(model.double(), x, y).item()
        held_out = _reference_loss(model, xt, yt).item()
        accuracy = (model(x).argmax(-1) == y).double().mean().item()
    table = data.token_transitions()
    rate = -(table[0, 0] * table[0, 0].log()).sum().item()  # every row has the same entropy
    floor = (math.log(8) + 11 * rate) / 12  # entropy rate: uniform first target, then the chain
    # Chance is log 8 = 2.08 nats; trained well below it, and the held-out draw (which no model
    # beats in expectation below the floor) stays close to the floor: it learnt the chain.
    assert loss < 0.4 and accuracy > 0.85
    assert floor < held_out < floor + 0.25


def test_training_is_deterministic_and_matches_the_committed_structure() -> None:
    """Two trainings on one machine give equal tensors; the committed file (trained on another
    CPU, whose float32 kernels round differently) has the same keys, shapes and dtypes. Its loss
    is compared in test_sample_models (within 5 %)."""
    committed = torch.load(sample_models.CHECKPOINT_DIR / "transformer.pt", weights_only=True)
    threads = torch.get_num_threads()
    states = []
    for _ in range(2):
        with train.deterministic():
            model, stats = train.train_transformer()
        states.append(model.state_dict())
    assert torch.get_num_threads() == threads
    assert stats["parameters"] == 2252
    first, second = states
    assert first.keys() == second.keys() == committed.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
        assert (first[key].shape, first[key].dtype) == (committed[key].shape, committed[key].dtype)


# --- spectrum against the exact Hessian ---------------------------------------------------------


def _dense_hessian(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact Hessian of the mean next-token loss by double backward, rows in blocks of 64."""
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    loss = _reference_loss(model, x, y)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params, create_graph=True)])
    eye = torch.eye(n, dtype=g.dtype)
    rows = []
    for start in range(0, n, 64):
        block = torch.autograd.grad(
            g, params, eye[start : start + 64], retain_graph=True, is_grads_batched=True
        )
        rows.append(torch.cat([b.reshape(b.shape[0], -1) for b in block], dim=1))
    return torch.cat(rows)


def test_spectrum_matches_the_exact_hessian() -> None:
    result = CliRunner().invoke(
        app,
        [
            "spectrum",
            "sample:transformer",
            "--dtype",
            "float64",
            "--max-samples",
            str(EXACT_SAMPLES),
            "--no-density",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["num_parameters"] == 2252 and out["num_samples"] == EXACT_SAMPLES

    model = _trained().double()
    x, y = data.tokens()
    h = _dense_hessian(model, x[:EXACT_SAMPLES], y[:EXACT_SAMPLES])
    h = (h + h.T) / 2  # symmetric up to round-off
    eig = torch.linalg.eigvalsh(h)
    # Lanczos stops on a relative residual of 1e-4 (the default --tol): λ_max to 1e-4 relative.
    assert abs(out["lambda_max"] - eig[-1].item()) <= 1e-4 * abs(eig[-1].item())
    # Deflated Hutch++ with 150 HVPs: a few standard errors (reported ~0.2 %) is within 2 %.
    trace = eig.sum().item()
    assert abs(out["trace"]["estimate"] - trace) <= 0.02 * abs(trace)
    assert abs(out["trace"]["estimate"] - trace) <= 5 * out["trace"]["stderr"]
