"""Weighted mixing sampler (proportions, determinism, sharding, resume) and few-shot selection."""

from collections import Counter

import pytest

from glip.data.mixing import MixedDataset, WeightedMixSampler, few_shot_image_ids, mix_weights
from glip.errors import ConfigError


class _Echo:
    """A dataset returning what it was asked for."""

    def __init__(self, name, size):
        self.name, self.size = name, size

    def __len__(self):
        return self.size

    def __getitem__(self, key):
        return (self.name, key)


def _dataset_of(index, sizes=(10, 4)):
    return 0 if index < sizes[0] else 1


def test_repeat_mode_copies_per_epoch():
    sampler = WeightedMixSampler([10, 4], [1, 2.5], seed=0)
    indices = sampler.epoch_indices(0)
    assert len(indices) == len(sampler) == 10 + 10
    counts = Counter(indices)
    assert all(counts[i] == 1 for i in range(10))
    assert sorted(counts[i] for i in range(10, 14)) == [2, 2, 3, 3]  # 2 full copies + a random half


def test_ratio_mode_proportions():
    sampler = WeightedMixSampler([100, 7], [1, 3], mode="ratio", num_samples=400, seed=1)
    indices = sampler.epoch_indices(0)
    per_dataset = Counter(_dataset_of(i, (100, 7)) for i in indices)
    assert per_dataset == {0: 100, 1: 300}
    small = Counter(i for i in indices if i >= 100)
    assert max(small.values()) - min(small.values()) <= 1  # cycled through evenly


def test_determinism_and_epoch_variation():
    a = WeightedMixSampler([10, 4], [1, 2], seed=3)
    b = WeightedMixSampler([10, 4], [1, 2], seed=3)
    assert list(a) == list(b)
    assert a.epoch_indices(0) != a.epoch_indices(1)
    assert a.epoch_indices(0) != WeightedMixSampler([10, 4], [1, 2], seed=4).epoch_indices(0)
    a.set_epoch(5)
    assert all(epoch == 5 for _, epoch in a)
    ordered = WeightedMixSampler([3, 2], shuffle=False, yield_epoch=False)
    assert list(ordered) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("world_size", "drop_last"), [(2, False), (3, False), (3, True), (4, False)])
def test_ranks_are_disjoint_and_cover_the_epoch(world_size, drop_last):
    sizes, weights = [10, 4], [1, 2]
    shards = [
        [i for i, _ in WeightedMixSampler(sizes, weights, seed=7, rank=r, world_size=world_size, drop_last=drop_last)]
        for r in range(world_size)
    ]
    full = WeightedMixSampler(sizes, weights, seed=7).epoch_indices(0)
    assert len({len(s) for s in shards}) == 1
    positions = sorted(p for r in range(world_size) for p in range(r, len(shards[r]) * world_size, world_size))
    assert len(positions) == len(set(positions))  # no position is served twice
    served = [idx for s in shards for idx in s]
    if drop_last:
        assert len(served) == (len(full) // world_size) * world_size
    else:
        assert Counter(full) - Counter(served) == Counter()  # every sample of the epoch is served
        assert len(served) - len(full) < world_size  # padding by wrap-around only
    expected = len(WeightedMixSampler(sizes, weights, rank=0, world_size=world_size, drop_last=drop_last))
    assert all(len(s) == expected for s in shards)


@pytest.mark.parametrize(("old_world", "new_world"), [(1, 1), (2, 2), (2, 4), (4, 2)])
def test_mid_epoch_resume_is_exact(old_world, new_world):
    sizes, weights = [13, 5], [1, 3]
    full = WeightedMixSampler(sizes, weights, seed=11).epoch_indices(2)
    consumed = 3  # per rank, before the interruption
    states = []
    for r in range(old_world):
        sampler = WeightedMixSampler(sizes, weights, seed=11, rank=r, world_size=old_world)
        sampler.set_epoch(2)
        iterator = iter(sampler)
        for _ in range(consumed + 2):  # the loader prefetched 2 more than were trained on
            next(iterator)
        states.append(sampler.state_dict(consumed=consumed))
    assert all(s == states[0] for s in states) and states[0]["offset"] == consumed * old_world
    rest = {}
    for r in range(new_world):
        sampler = WeightedMixSampler(sizes, weights, seed=11, rank=r, world_size=new_world)
        sampler.load_state_dict(states[0])
        sampler.set_epoch(2)  # the trainer calling set_epoch on the same epoch keeps the position
        expected_len = len(sampler)
        rest[r] = [i for i, _ in sampler]
        assert len(rest[r]) == expected_len
    resumed = [rest[p % new_world][p // new_world] for p in range(len(full) - consumed * old_world)]
    assert resumed == full[consumed * old_world :]
    sampler.set_epoch(3)
    assert len(list(sampler)) == len(WeightedMixSampler(sizes, weights, rank=0, world_size=new_world))


def test_state_dict_checks_seed_and_counts_yielded_by_default():
    sampler = WeightedMixSampler([6], seed=1)
    iterator = iter(sampler)
    next(iterator)
    next(iterator)
    assert sampler.state_dict() == {"seed": 1, "epoch": 0, "offset": 2, "world_size": 1}
    rest = list(iterator)  # the loader exhausted the sampler while the trainer is still 4 samples behind
    assert len(rest) == 4 and sampler.state_dict(consumed=2)["offset"] == 2
    with pytest.raises(ConfigError, match="seed 1"):
        WeightedMixSampler([6], seed=2).load_state_dict(sampler.state_dict())


def test_mixed_dataset_forwards_epoch_keys():
    mixed = MixedDataset([_Echo("a", 3), _Echo("b", 2)], names=["a", "b"])
    assert len(mixed) == 5 and mixed.locate(3) == (1, 0)
    assert mixed[4] == ("b", 1) and mixed[(1, 7)] == ("a", (1, 7))
    with pytest.raises(IndexError):
        mixed[5]
    assert mix_weights(["a", "b"], {"b": 2}) == [1.0, 2.0]
    with pytest.raises(ConfigError, match="unknown datasets"):
        mix_weights(["a"], {"c": 1})


def test_sampler_validation():
    with pytest.raises(ConfigError, match="weights"):
        WeightedMixSampler([3, 4], [1])
    with pytest.raises(ConfigError, match="rank"):
        WeightedMixSampler([3], rank=2, world_size=2)
    with pytest.raises(ConfigError, match="nothing to sample"):
        WeightedMixSampler([3, 0], [0, 1])
    with pytest.raises(ConfigError, match="mode"):
        WeightedMixSampler([3], mode="x")


def test_few_shot_greedy_selection_hand_made():
    cats = {1: {1}, 2: {1, 2}, 3: {2}, 4: {3}, 5: {1, 3}, 6: {2, 3}, 7: {1}}
    # k=1: 1 takes cat 1; 2 needed for cat 2; 3 not needed; 4 takes cat 3; the rest not needed.
    assert few_shot_image_ids(list(cats), cats, 1) == [1, 2, 4]
    # k=2: 1 (c1=1), 2 (c1=0, c2=1), 3 (c2=0), 4 (c3=1), 5 (c1=-1, c3=0), 6, 7 not needed.
    assert few_shot_image_ids([7, 6, 5, 4, 3, 2, 1], cats, 2) == [1, 2, 3, 4, 5]
    seeded = few_shot_image_ids(list(cats), cats, 1, seed=3)
    assert seeded == few_shot_image_ids(list(cats), cats, 1, seed=3) and set(seeded) <= set(cats)
    covered = set().union(*(cats[i] for i in seeded))
    assert covered == {1, 2, 3}
    assert few_shot_image_ids(list(cats), cats, 1, category_ids=[3]) == [4]
    with pytest.raises(ConfigError, match="shots"):
        few_shot_image_ids([1], cats, 0)
