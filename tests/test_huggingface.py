"""Hugging Face model directories as checkpoints, token data and the sequence losses, end to end.

Tiny BERT and GPT-2 models are built from configs (no download), saved with ``save_pretrained``
and analysed through the CLI with no model and no loss given. References are independent of
landscape: the same weights in an eager-attention model in float64, with the loss written out
here, its Hessian-vector products by plain double backward and λ_max by ARPACK (scipy's eigsh)
at a tight tolerance; the GGN of the tiny language model is formed densely with torch.func.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

transformers = pytest.importorskip(
    "transformers", reason="the Hugging Face extra (transformers) is not installed"
)

from landscape_cli.cli import app  # noqa: E402
from landscape_cli.errors import InputError  # noqa: E402
from landscape_cli.problem.huggingface import load_huggingface  # noqa: E402
from landscape_cli.problem.losses import SplitLoss  # noqa: E402

runner = CliRunner()
SAMPLES, LENGTH, VOCAB = 16, 8, 50
#: λ_max only, in float64, to a tight Lanczos tolerance, one thread (a shared CI machine)
EXACT = ["--dtype", "float64", "--top-k", "1", "--bottom-k", "0", "--no-trace", "--no-density",
         "--tol", "1e-10", "--threads", "1"]  # fmt: skip


def _tokens(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (SAMPLES, LENGTH), generator=generator)
    mask = torch.ones(SAMPLES, LENGTH, dtype=torch.int64)
    mask[::3, LENGTH - 2 :] = 0  # right padding on every third sample
    labels = torch.randint(0, 3, (SAMPLES,), generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _bert_config(**extra):
    return transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **extra,
    )  # fmt: skip


def _gpt2_config(n_embd: int = 16, n_layer: int = 2, vocab: int = VOCAB, **extra):
    return transformers.GPT2Config(
        vocab_size=vocab, n_positions=LENGTH, n_embd=n_embd, n_layer=n_layer, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **extra,
    )  # fmt: skip


def _saved(model_class: str, config, seed: int, path: Path) -> Path:
    """A model of ``config`` with random weights (seeded), written by ``save_pretrained``."""
    torch.manual_seed(seed)
    getattr(transformers, model_class)(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    config = _bert_config(attn_implementation="sdpa")
    return _saved("BertForSequenceClassification", config, 0, tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    config = _gpt2_config(attn_implementation="sdpa")
    return _saved("GPT2LMHeadModel", config, 1, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def tokens_pt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tokens.pt"
    torch.save(_tokens(), path)
    return path


# ---------------------------------------------------------------- independent references
def _reference_model(directory: Path, auto: str):
    """The saved weights in an eager-attention (softmax written out) model in float64."""
    cls = getattr(transformers, auto)
    return cls.from_pretrained(
        directory, local_files_only=True, attn_implementation="eager", dtype=torch.float64
    ).eval()


def _classification_loss(model, data):
    logits = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(logits, data["labels"])


def _lm_loss(model, data):
    """Next-token cross-entropy, the mean over the target positions whose mask is 1."""
    logits = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits
    targets = data["input_ids"][:, 1:]
    counted = data["attention_mask"][:, 1:].bool()
    log_p = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -(picked * counted).sum() / counted.sum()


def _reference_lambda_max(model, loss_fn, data) -> float:
    """λ_max of the float64 Hessian by ARPACK over double-backward HVPs."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model, data)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    n = flat.numel()

    def matvec(v):
        vector = torch.as_tensor(np.asarray(v).reshape(-1), dtype=torch.float64)
        hv = torch.autograd.grad(flat @ vector, params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).numpy()

    operator = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    start = np.random.default_rng(0).standard_normal(n)
    return float(eigsh(operator, k=1, which="LA", tol=1e-12, v0=start)[0][0])


def _spectrum_json(*args: str) -> dict:
    result = runner.invoke(app, ["spectrum", *args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# ---------------------------------------------------------------- acceptance
def test_bert_directory_is_analysed_with_its_classification_loss(bert_dir, tokens_pt):
    payload = _spectrum_json(str(bert_dir), "--data", str(tokens_pt), *EXACT)
    model = _reference_model(bert_dir, "BertForSequenceClassification")
    data = _tokens()
    with torch.no_grad():
        assert payload["loss"] == pytest.approx(float(_classification_loss(model, data)), rel=1e-12)
    reference = _reference_lambda_max(model, _classification_loss, data)
    assert payload["lambda_max"] == pytest.approx(reference, rel=1e-6)
    assert "math backend" in payload["notes"]["attention"]
    assert payload["checkpoint"] == str(bert_dir)
    assert len(payload["checkpoint_sha256"]) == 64


def test_gpt2_directory_runs_through_the_console_script_on_npz_tokens(gpt2_dir, tmp_path):
    data = _tokens()
    npz = tmp_path / "tokens.npz"
    np.savez(
        npz, input_ids=data["input_ids"].numpy(), attention_mask=data["attention_mask"].numpy()
    )
    script = Path(sys.executable).with_name("landscape")
    command = [str(script)] if script.exists() else [shutil.which("landscape") or "landscape"]
    proc = subprocess.run(
        [*command, "spectrum", str(gpt2_dir), "--data", str(npz), *EXACT, "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    model = _reference_model(gpt2_dir, "GPT2LMHeadModel")
    reference = _reference_lambda_max(model, _lm_loss, data)
    assert payload["lambda_max"] == pytest.approx(reference, rel=1e-6)


def test_gpt2_tied_head_is_the_token_embedding(gpt2_dir):
    loaded = load_huggingface(gpt2_dir)
    model = loaded.model
    assert model.lm_head.weight is model.transformer.wte.weight
    saved = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir, local_files_only=True)
    assert torch.equal(model.lm_head.weight, saved.lm_head.weight)
    assert loaded.default_loss == "lm"
    assert loaded.checkpoint.format == "huggingface"


def test_sharded_and_bin_directories_load_the_same_weights(gpt2_dir, tmp_path):
    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir, local_files_only=True)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").exists()
    binary = tmp_path / "binary"
    shutil.copytree(gpt2_dir, binary)
    (binary / "model.safetensors").unlink()
    torch.save(model.state_dict(), binary / "pytorch_model.bin")
    expected = load_huggingface(gpt2_dir).model.state_dict()
    for directory in (sharded, binary):
        state = load_huggingface(directory).model.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_ggn_of_the_lm_loss_equals_the_dense_ggn(tmp_path):
    config = _gpt2_config(n_embd=8, n_layer=1, vocab=11, attn_implementation="sdpa")
    _saved("GPT2LMHeadModel", config, 2, tmp_path / "lm")
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 11, (4, 6), generator=generator)
    mask = torch.ones(4, 6, dtype=torch.int64)
    mask[0, 4:] = 0
    torch.save({"input_ids": ids, "attention_mask": mask}, tmp_path / "t.pt")
    payload = _spectrum_json(
        str(tmp_path / "lm"), "--data", str(tmp_path / "t.pt"), "--curvature", "ggn", *EXACT
    )
    reference = _reference_model(tmp_path / "lm", "GPT2LMHeadModel")
    names = [n for n, _ in reference.named_parameters()]
    params = {n: p.detach() for n, p in reference.named_parameters()}
    data = {"input_ids": ids, "attention_mask": mask}

    def logits(flat_params):
        return torch.func.functional_call(reference, flat_params, kwargs=data).logits

    def loss_of_logits(z):
        return _lm_loss(lambda **_: type("Out", (), {"logits": z})(), data)

    z = logits(params)
    J = torch.func.jacrev(logits)(params)
    J = torch.cat([J[n].reshape(z.numel(), -1) for n in names], dim=1)
    H_L = torch.func.hessian(loss_of_logits)(z).reshape(z.numel(), z.numel())
    G = J.T @ H_L @ J
    assert payload["lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(G)[-1]), rel=1e-6)


def test_explicit_loss_wins_over_the_architecture(gpt2_dir, tokens_pt):
    result = runner.invoke(
        app,
        ["inspect", str(gpt2_dir), "--data", str(tokens_pt), "--loss", "sequence_classification"],
    )
    assert result.exit_code == 2  # (16, 8, 50) logits against (16,) labels
    assert "does not fit the model and loss" in result.stderr


def test_half_precision_weights_are_noted(tmp_path, tokens_pt):
    config = _bert_config(attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    payload = _spectrum_json(str(tmp_path / "bf16"), "--data", str(tokens_pt), *EXACT[2:])
    assert payload["notes"]["precision"] == "weights stored in bfloat16, analysed in float32"


def test_without_transformers_the_error_names_the_extra(bert_dir, tokens_pt, monkeypatch):
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    result = runner.invoke(app, ["inspect", str(bert_dir), "--data", str(tokens_pt)])
    assert result.exit_code == 2
    assert 'pip install "landscape-cli[hf]"' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_directory_that_is_not_a_model_is_one_line(tmp_path, tokens_pt):
    result = runner.invoke(app, ["inspect", str(tmp_path), "--data", str(tokens_pt)])
    assert result.exit_code == 2
    assert "is a directory, expected a file or a Hugging Face model directory" in result.stderr
    assert "holds no config.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_directory_without_weights_is_one_line(tmp_path):
    _bert_config().save_pretrained(tmp_path)
    with pytest.raises(InputError, match="without weights"):
        load_huggingface(tmp_path)


# ---------------------------------------------------------------- the sequence losses
def test_lm_per_sample_losses_average_to_the_batch_loss():
    """The EF's per-sample split: (1/n) Σ_i c_i ℓ(sample i alone) is the batch's token mean."""
    split = SplitLoss("lm")
    data = _tokens()
    data.pop("labels")
    logits = torch.randn(SAMPLES, LENGTH, 7, dtype=torch.float64)
    data["input_ids"] = data["input_ids"] % 7
    weights = split.sample_weights(data)
    alone = torch.stack(
        [
            split.loss(logits[i : i + 1], {k: v[i : i + 1] for k, v in data.items()})
            for i in range(SAMPLES)
        ]
    )
    assert float((weights * alone).mean()) == pytest.approx(
        float(split.loss(logits, data)), rel=1e-12
    )


def test_empirical_fisher_gradients_sum_to_the_gradient(gpt2_dir, tmp_path):
    from landscape_cli import build_objective, resolve_run_config
    from landscape_cli.operators.empirical_fisher import EmpiricalFisherOperator

    data = _tokens()
    data.pop("labels")  # lm: the input_ids predict themselves
    torch.save(data, tmp_path / "lm.pt")
    config = resolve_run_config(
        {"checkpoint": str(gpt2_dir), "data": str(tmp_path / "lm.pt"), "dtype": "float64",
         "batch_size": 6, "threads": 1}
    )  # fmt: skip
    objective = build_objective(config)
    fisher = EmpiricalFisherOperator(objective, objective._module.loss_fn)
    total = sum(G.sum(dim=0) * scale for G, scale in fisher._batches())
    assert torch.allclose(total, objective.gradient, rtol=1e-9, atol=1e-12)


def test_model_outputs_resolve_to_logits():
    from landscape_cli.problem.losses import model_logits

    z = torch.randn(2, 3)
    assert model_logits({"logits": z, "loss": None}) is z
    assert model_logits((z, torch.zeros(1))) is z
    with pytest.raises(InputError, match="without a 'logits'"):
        model_logits({"hidden_states": z})


def test_the_jacobian_of_token_data_is_one_line(bert_dir, tokens_pt):
    result = runner.invoke(
        app, ["jacobian", str(bert_dir), "--data", str(tokens_pt), "--threads", "1"]
    )
    assert result.exit_code == 2
    assert "named model inputs (input_ids, attention_mask, labels)" in result.stderr


def test_model_code_in_the_directory_runs_only_with_trust(tmp_path, tokens_pt):
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "shipped",
                "architectures": ["ShippedForCausalLM"],
                "auto_map": {"AutoConfig": "configuration_shipped.ShippedConfig"},
            }
        )
    )
    marker = tmp_path / "code-ran"
    (tmp_path / "configuration_shipped.py").write_text(f"open({str(marker)!r}, 'w')\n")
    save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    result = runner.invoke(app, ["inspect", str(tmp_path), "--data", str(tokens_pt)])
    assert result.exit_code == 2
    assert "--trust-checkpoint" in result.stderr
    assert not marker.exists()
