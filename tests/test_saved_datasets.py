"""A folder written by Hugging Face's ``Dataset.save_to_disk`` as ``--data``: numeric columns as
named inputs, transformers' collator conventions (``label`` → ``labels``, padding, attention
mask), splits, and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from landscape_cli.cli import app
from landscape_cli.errors import InputError
from landscape_cli.problem.loading import load_data

datasets = pytest.importorskip("datasets")
runner = CliRunner()


def saved(path: Path, columns: dict) -> Path:
    datasets.Dataset.from_dict(columns).save_to_disk(str(path))
    return path


def whole(batches):
    return batches.source


def test_ragged_token_rows_are_padded_with_a_mask_and_text_is_left_out(tmp_path):
    folder = saved(
        tmp_path / "ds",
        {"input_ids": [[5, 6, 7], [8, 9], [4]], "label": [2, 0, 1], "text": ["a b c", "d e", "f"]},
    )
    source = whole(load_data(str(folder), batch_size=8, max_samples=None))
    assert set(source) == {"input_ids", "attention_mask", "labels"}
    assert source["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0], [4, 0, 0]]
    assert source["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert source["labels"].tolist() == [2, 0, 1]
    assert source["input_ids"].dtype == torch.int64


def test_per_token_labels_are_padded_with_the_ignored_index(tmp_path):
    folder = saved(
        tmp_path / "ds",
        {
            "input_ids": [[5, 6], [8]],
            "attention_mask": [[1, 1], [1]],
            "labels": [[6, 1], [3]],
        },
    )
    source = whole(load_data(str(folder), batch_size=8, max_samples=None))
    assert source["labels"].tolist() == [[6, 1], [3, -100]]
    assert source["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_only_the_kept_rows_are_read_and_padded(tmp_path):
    folder = saved(tmp_path / "ds", {"input_ids": [[1], [2, 3], [4, 5, 6, 7]]})
    source = whole(load_data(str(folder), batch_size=8, max_samples=2))
    assert source["input_ids"].tolist() == [[1, 0], [2, 3]]


def test_x_and_y_columns_are_a_pair(tmp_path):
    x = torch.randn(5, 3)
    folder = saved(tmp_path / "ds", {"x": x.tolist(), "y": [0, 1, 0, 1, 1]})
    source = whole(load_data(str(folder), batch_size=8, max_samples=None))
    assert torch.allclose(source[0], x)
    assert source[1].tolist() == [0, 1, 0, 1, 1]


def test_a_dataset_dict_names_its_splits_and_a_split_folder_is_read(tmp_path):
    pair = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"input_ids": [[1, 2]]}),
            "test": datasets.Dataset.from_dict({"input_ids": [[3, 4]]}),
        }
    )
    pair.save_to_disk(str(tmp_path / "both"))
    with pytest.raises(InputError, match="holds the splits train, test; name one"):
        load_data(str(tmp_path / "both"), batch_size=8, max_samples=None)
    source = whole(load_data(str(tmp_path / "both" / "test"), batch_size=8, max_samples=None))
    assert source["input_ids"].tolist() == [[3, 4]]
    datasets.DatasetDict({"train": pair["train"]}).save_to_disk(str(tmp_path / "one"))
    source = whole(load_data(str(tmp_path / "one"), batch_size=8, max_samples=None))
    assert source["input_ids"].tolist() == [[1, 2]]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"text": ["a", "b"], "label": [0, 1]}, "no numeric column 'input_ids', nor 'x' and 'y'"),
        ({"input_ids": [[1, 2], [3]], "labels": [[1], [2, 3]]}, "differ in length on some samples"),
    ],
)
def test_unusable_columns_are_refused(tmp_path, columns, message):
    folder = saved(tmp_path / "ds", columns)
    with pytest.raises(InputError, match=message):
        load_data(str(folder), batch_size=8, max_samples=None)


def test_a_folder_that_is_not_a_dataset_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(InputError, match="is a folder but not a saved dataset"):
        load_data(str(tmp_path / "notes"), batch_size=8, max_samples=None)


def test_without_datasets_the_error_names_the_extra(tmp_path, monkeypatch):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "state.json").write_text(json.dumps({}))
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(InputError, match=r"needs the `datasets` package") as error:
        load_data(str(folder), batch_size=8, max_samples=None)
    assert "landscape-cli[datasets]" in error.value.hint


def test_a_language_model_on_a_saved_dataset_matches_the_same_tokens_in_a_file(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=32, n_positions=8, n_embd=8, n_layer=1, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    generator = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 32, (n,), generator=generator).tolist() for n in (6, 4, 5, 6)]
    folder = saved(tmp_path / "ds", {"input_ids": rows})
    width = max(map(len, rows))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    torch.save({"input_ids": ids, "attention_mask": mask}, tmp_path / "tokens.pt")
    flags = ["--dtype", "float64", "--lambda-max", "--tol", "1e-8", "--json"]
    values = []
    for data in (folder, tmp_path / "tokens.pt"):
        result = runner.invoke(
            app, ["spectrum", str(tmp_path / "gpt2"), "--data", str(data), *flags]
        )
        assert result.exit_code == 0, result.stderr
        values.append(json.loads(result.stdout)["lambda_max"])
    assert values[0] == values[1]
