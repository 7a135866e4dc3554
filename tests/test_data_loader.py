"""A ``DataLoader`` given as data is read as the loader makes its batches: its batch sampler's
order and batch composition and its ``collate_fn``, weighted by sample count.

Where the batch composition matters (train-mode BatchNorm) the loader's batches must give exactly
what the same batches cut from tensors give, and something else than other batches would; in
eval mode the HVP of 100 samples in loader batches of 32 equals one batch of 100 (float64, to
1e-12 relative: only the summation order differs).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape_cli.errors import InputError
from landscape_cli.operators.hessian import HessianOperator
from landscape_cli.problem.data import loader_batches, tensor_batches
from landscape_cli.problem.losses import SplitLoss
from landscape_cli.problem.objective import Objective

F64 = torch.float64


def data(n: int = 40):
    gen = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, generator=gen, dtype=F64), torch.randint(0, 3, (n,), generator=gen)


def bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()


def loss_and_hvp(batches, mode: str = "train", model: nn.Module | None = None):
    obj = Objective(model or bn_mlp(), SplitLoss("cross_entropy"), batches, dtype=F64, mode=mode)
    v = torch.linspace(-1, 1, obj.num_parameters, dtype=F64)
    return obj.loss_value, HessianOperator(obj) @ v


def test_loader_batches_follow_the_loader_batch_size_not_the_flag():
    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    batches = loader_batches(loader, None, "loader")
    assert batches.sizes == (7, 7, 7, 7, 7, 5) and batches.num_samples == 40
    assert sum(w for _, w in batches) == pytest.approx(1.0, abs=1e-15)
    got = loss_and_hvp(batches)
    same = loss_and_hvp(tensor_batches((x, y), 7, None, "t"))
    other = loss_and_hvp(tensor_batches((x, y), 16, None, "t"))
    assert got[0] == pytest.approx(same[0], rel=1e-14)
    assert torch.allclose(got[1], same[1], rtol=1e-12, atol=1e-14)
    # train-mode BatchNorm sees the batches: batches of 16 are a different function
    assert abs(got[0] - other[0]) > 1e-6


def test_a_fixed_sampler_order_is_honoured():
    x, y = data()
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(9)).tolist()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=10, sampler=perm
    )
    batches = loader_batches(loader, None, "permuted")
    assert not batches.reorders_between_passes()
    got = loss_and_hvp(batches)
    expected = loss_and_hvp(tensor_batches((x[perm], y[perm]), 10, None, "t"))
    assert got[0] == pytest.approx(expected[0], rel=1e-14)
    assert torch.allclose(got[1], expected[1], rtol=1e-12, atol=1e-14)


def test_collate_fn_is_used_and_a_mapping_batch_is_read_as_x_y():
    x, y = data()

    def collate(items):
        return {
            "x": 2.0 * torch.stack([i[0] for i in items]),
            "y": torch.stack([i[1] for i in items]),
        }

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=8, collate_fn=collate
    )
    got = loss_and_hvp(loader_batches(loader, None, "collated"), mode="eval")
    expected = loss_and_hvp(tensor_batches((2.0 * x, y), 8, None, "t"), mode="eval")
    assert got[0] == pytest.approx(expected[0], rel=1e-14)
    assert torch.allclose(got[1], expected[1], rtol=1e-12, atol=1e-14)


def test_hundred_samples_in_loader_batches_of_32_equal_one_batch_of_100():
    x, y = data(100)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    batches = loader_batches(loader, None, "loader")
    assert batches.sizes == (32, 32, 32, 4)
    got = loss_and_hvp(batches, mode="eval")
    one = loss_and_hvp(tensor_batches((x, y), 100, None, "t"), mode="eval")
    assert got[0] == pytest.approx(one[0], rel=1e-12)
    assert torch.allclose(got[1], one[1], rtol=1e-12, atol=1e-14)


def test_max_samples_cuts_the_pass_and_weights_still_sum_to_one():
    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    batches = loader_batches(loader, 17, "cut")
    assert batches.sizes == (7, 7, 3) and batches.num_samples == 17
    seen = torch.cat([b[0] for b, _ in batches])
    assert torch.equal(seen, x[:17])
    assert [w for _, w in batches] == pytest.approx([7 / 17, 7 / 17, 3 / 17])


def test_subset_and_shard_keep_the_loader_batches():
    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    batches = loader_batches(loader, None, "loader")
    whole = [b for b, _ in batches]
    sub = batches.subset(2, 5)
    assert sub.sizes == (7, 7, 7) and sub.num_samples == 21 and len(sub) == 3
    for (b, w), expected in zip(sub, whole[2:5], strict=True):
        assert torch.equal(b[0], expected[0]) and w == pytest.approx(1 / 3)
    shard = batches.shard(1, 2)
    local = list(shard.local())
    assert [i for i, _, _ in local] == [1, 3, 5]
    for index, b, w in local:
        assert torch.equal(b[0], whole[index][0]) and w == len(b[0]) / 40
    assert batches.batch_size_bound == 7


def test_unsupported_loaders_are_input_errors():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from zip(*data(), strict=True)

    with pytest.raises(InputError, match="IterableDataset"):
        loader_batches(torch.utils.data.DataLoader(Stream(), batch_size=4), None, "stream")
    x, y = data()
    unbatched = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=None)
    with pytest.raises(InputError, match="batch_size=None"):
        loader_batches(unbatched, None, "single")

    def broken(items):
        raise ValueError("ragged")

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=8, collate_fn=broken
    )
    batches = loader_batches(loader, None, "broken")
    with pytest.raises(InputError, match="collate_fn failed on batch 0"):
        next(iter(batches))


def test_a_sharding_distributed_sampler_is_refused_and_one_replica_is_read():
    """A DistributedSampler that shards is refused: under torchrun its share would be sharded
    again across ranks, and the run would average over 1/world_size of the data without a word."""
    x, y = data()
    dataset = torch.utils.data.TensorDataset(x, y)
    sharded = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=sharded)
    with pytest.raises(InputError, match="DistributedSampler reads only 1/2"):
        loader_batches(loader, None, "sharded")
    whole = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False)
    batches = loader_batches(
        torch.utils.data.DataLoader(dataset, batch_size=8, sampler=whole), None, "one"
    )
    assert batches.num_samples == 40


def test_a_batch_sampler_of_non_integers_is_an_input_error():
    x, y = data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_sampler=[["a", "b"], ["c"]]
    )
    with pytest.raises(InputError, match="not a list of integer indices"):
        loader_batches(loader, None, "letters")


def test_nan_inputs_in_a_loader_name_the_batch_and_sample():
    """File data are checked for NaN inputs on loading; a DataLoader is only read during the
    run, so a NaN input must still be named when the loss turns non-finite."""
    from landscape_cli.errors import NumericalError

    x, y = data()
    x = x.clone()
    x[19, 1] = float("nan")  # batch 2 of batches of 8, sample 3 within it
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    with pytest.raises(NumericalError, match=r"on batch 2 of 5: the inputs 'x' hold NaN") as info:
        Objective(
            bn_mlp(), SplitLoss("cross_entropy"), loader_batches(loader, None, "l"), dtype=F64
        )
    assert "the first is sample 3 of that batch" in str(info.value)
