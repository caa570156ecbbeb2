"""Mixing datasets, sharding them over ranks with exact mid-epoch resume, and few-shot selection.

The official code concatenates its training datasets (``data/build.py``: ``ConcatDataset``, with
``DATASETS.GENERAL_COPY`` repeating small ones) and shards them with a ``DistributedSampler``
seeded by the epoch. :class:`WeightedMixSampler` generalises that:

* ``mode="repeat"`` (default): weight = copies of the dataset per epoch (``{coco128: 1,
  raccoon: 2}`` shows every raccoon image twice per epoch; 0.5 shows a random half). This is the
  official ``GENERAL_COPY`` semantics with fractional copies allowed;
* ``mode="ratio"``: weight = share of an epoch of ``num_samples`` samples (default: the sum of the
  dataset sizes); small datasets are cycled through (reshuffled at each pass), large ones subsampled.

An epoch's index list depends only on ``(seed, epoch)``. Rank ``r`` of ``W`` takes positions
``offset + r, offset + r + W, ...`` of it (padded by wrapping around, as ``DistributedSampler``),
so ranks are disjoint, and ``offset`` (samples consumed by all ranks together) makes resuming
mid-epoch exact, even with a different world size.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from glip.errors import ConfigError

logger = logging.getLogger(__name__)


class MixedDataset(Dataset):
    """Concatenation of datasets that forwards ``(index, epoch)`` keys (``ConcatDataset`` does not).

    Index ``i`` addresses dataset ``k`` at local index ``i - offsets[k]``.
    """

    def __init__(self, datasets: Sequence[Dataset], names: Sequence[str] | None = None) -> None:
        if not datasets:
            raise ConfigError("MixedDataset needs at least one dataset")
        self.datasets = list(datasets)
        self.names = list(names) if names is not None else [f"dataset{i}" for i in range(len(datasets))]
        if len(self.names) != len(self.datasets):
            raise ConfigError(f"got {len(self.names)} names for {len(self.datasets)} datasets")
        self.sizes = [len(d) for d in self.datasets]  # type: ignore[arg-type]
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(dataset number, local index)`` of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        k = bisect.bisect_right(self.offsets, index) - 1
        return k, index - self.offsets[k]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, epoch = (key[0], key[1]) if isinstance(key, tuple) else (key, None)
        k, local = self.locate(int(index))
        return self.datasets[k][(local, int(epoch)) if epoch is not None else local]


def mix_weights(names: Sequence[str], weights: Mapping[str, float] | None) -> list[float]:
    """Weights in dataset order from ``{name: weight}`` (missing names get 1).

    Raises:
        ConfigError: a weight names an unknown dataset or is negative.
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ConfigError(f"mixing weights name unknown datasets {unknown}; known: {list(names)}")
    return [float(weights.get(n, 1.0)) for n in names]


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder)."""
    norm = sum(weights)
    exact = [total * w / norm for w in weights]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


class WeightedMixSampler(Sampler):
    """Deterministic weighted mixing of datasets, sharded over ranks, resumable mid-epoch.

    Args:
        dataset_sizes: length of each mixed dataset (in :class:`MixedDataset` order).
        weights: per dataset (see the module docstring); default all 1.
        mode: ``"repeat"`` or ``"ratio"``.
        num_samples: epoch length in ``"ratio"`` mode (default: sum of sizes).
        seed: base seed (same on every rank).
        rank, world_size: this process's shard.
        shuffle: shuffle within and across datasets (False: datasets in order, indices in order).
        drop_last: drop the tail that does not fill every rank instead of wrapping around.
        yield_epoch: yield ``(index, epoch)`` so the datasets seed each sample from its epoch
            (use with :class:`MixedDataset`); False yields plain indices.
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        weights: Sequence[float] | None = None,
        *,
        mode: str = "repeat",
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = False,
        yield_epoch: bool = True,
    ) -> None:
        self.sizes = [int(s) for s in dataset_sizes]
        self.weights = [1.0] * len(self.sizes) if weights is None else [float(w) for w in weights]
        if not self.sizes or len(self.weights) != len(self.sizes):
            raise ConfigError(f"got {len(self.weights)} weights for {len(self.sizes)} datasets")
        if any(w < 0 for w in self.weights) or any(s < 0 for s in self.sizes):
            raise ConfigError(f"weights {self.weights} and sizes {self.sizes} must be non-negative")
        if not any(w > 0 and s > 0 for w, s in zip(self.weights, self.sizes, strict=True)):
            raise ConfigError("every dataset is empty or has weight 0: nothing to sample")
        if mode not in ("repeat", "ratio"):
            raise ConfigError(f"mixing mode={mode!r}: use 'repeat' or 'ratio'")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank} must be in [0, world_size={world_size})")
        self.mode = mode
        self.num_samples = int(num_samples) if num_samples is not None else sum(self.sizes)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.shuffle, self.drop_last, self.yield_epoch = shuffle, drop_last, yield_epoch
        self.epoch = 0
        self.offset = 0  # samples of this epoch already consumed by all ranks together
        self._yielded = 0
        self._iter_offset = 0  # offset the latest iterator started from
        self._offsets = [0]
        for size in self.sizes:
            self._offsets.append(self._offsets[-1] + size)

    # ------------------------------------------------------------------ epoch content
    def counts(self) -> list[int]:
        """Samples drawn from each dataset per epoch."""
        usable = [w if s > 0 else 0.0 for w, s in zip(self.weights, self.sizes, strict=True)]
        if self.mode == "ratio":
            return _apportion(self.num_samples, usable)
        return [round(w * s) for w, s in zip(usable, self.sizes, strict=True)]

    def epoch_indices(self, epoch: int) -> list[int]:
        """The global index list of an epoch (before sharding); depends only on ``(seed, epoch)``."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + int(epoch)) % 2**63)
        chosen: list[int] = []
        for k, (size, count) in enumerate(zip(self.sizes, self.counts(), strict=True)):
            passes = []
            for _ in range(math.ceil(count / size) if size else 0):
                passes.append(torch.randperm(size, generator=generator) if self.shuffle else torch.arange(size))
            if passes:
                chosen.extend((torch.cat(passes)[:count] + self._offsets[k]).tolist())
        if self.shuffle:
            chosen = [chosen[i] for i in torch.randperm(len(chosen), generator=generator).tolist()]
        return chosen

    def _shard(self) -> list[int]:
        indices = self.epoch_indices(self.epoch)
        if not indices:
            return []
        remaining = len(indices) - self.offset
        if remaining <= 0:
            return []
        per_rank = remaining // self.world_size if self.drop_last else math.ceil(remaining / self.world_size)
        need = self.offset + per_rank * self.world_size
        while len(indices) < need:  # wrap around (DistributedSampler pads the same way)
            indices = indices + indices[: need - len(indices)]
        return indices[self.offset + self.rank : need : self.world_size]

    def __len__(self) -> int:
        total = sum(self.counts()) - self.offset
        if total <= 0:
            return 0
        return total // self.world_size if self.drop_last else math.ceil(total / self.world_size)

    def __iter__(self) -> Iterator[Any]:
        shard = self._shard()
        self._yielded = 0
        self._iter_offset = self.offset
        for index in shard:
            self._yielded += 1
            yield (index, self.epoch) if self.yield_epoch else index
        self.offset = 0  # a finished epoch restarts from its beginning (state_dict still uses _iter_offset)

    # ------------------------------------------------------------------ epochs and resume
    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; a different epoch than the current one restarts at its first sample.

        Call it before :meth:`state_dict` at an epoch boundary, so the saved state points at the
        new epoch rather than at the end of the finished one.
        """
        if int(epoch) != self.epoch:
            self.offset = self._iter_offset = self._yielded = 0
        self.epoch = int(epoch)

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """Resume state after this rank consumed ``consumed`` samples of the current iterator.

        Pass the count the training loop actually took from the loader (batches × batch size);
        ``None`` uses the samples yielded by the sampler, which a prefetching ``DataLoader`` makes
        larger than what was trained on. Every rank must have consumed the same number.
        """
        taken = self._yielded if consumed is None else int(consumed)
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "offset": self._iter_offset + taken * self.world_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue an epoch where :meth:`state_dict` left it (any world size).

        Raises:
            ConfigError: the state was written with another seed.
        """
        if int(state["seed"]) != self.seed:
            raise ConfigError(
                f"sampler state was saved with seed {state['seed']} but this sampler has seed {self.seed}: "
                "resume with the same seed (or start a new run)"
            )
        self.epoch = int(state["epoch"])
        self.offset = self._iter_offset = int(state["offset"])
        self._yielded = 0


def few_shot_image_ids(
    image_ids: Sequence[Any],
    categories_per_image: Mapping[Any, set[int] | Sequence[int]],
    shots: int,
    category_ids: Sequence[int] | None = None,
    seed: int | None = None,
) -> list[Any]:
    """Greedy image-level ``k``-shot selection of the official ODinW protocol.

    Visit images in sorted-id order (after a ``random.Random(seed).shuffle`` when ``seed`` is given);
    take an image if one of its categories still has quota ``> 0``, then decrement the quota of
    every category in it (quotas can go negative). Official: ``COCODataset`` shuffles with
    ``DATASETS.SHUFFLE_SEED`` first (``datasets/coco.py`` l.152-171), but the ``*_grounding``
    datasets used for ODinW (``CocoGrounding``, ``modulated_coco.py`` l.62-79) ignore the seed.
    The categories of an image are those of all its annotations, crowd included.

    Args:
        image_ids: candidate images (the official filters them with ``has_valid_annotation`` first).
        categories_per_image: category ids of each image.
        shots: quota ``k`` per category (``> 0``).
        category_ids: categories with a quota (default: all seen); others never make an image needed.
        seed: shuffle seed, or None for the official grounding behaviour (no shuffle).

    Returns:
        The selected image ids, in visiting order.
    """
    if shots <= 0:
        raise ConfigError(f"few-shot needs shots > 0, got {shots}")
    ids = sorted(image_ids, key=lambda i: (str(type(i)), i))
    if seed is not None:
        random.Random(seed).shuffle(ids)
    if category_ids is None:
        category_ids = sorted({int(c) for i in ids for c in categories_per_image.get(i, ())})
    quota = {int(c): int(shots) for c in category_ids}
    chosen = []
    for image_id in ids:
        cats = {int(c) for c in categories_per_image.get(image_id, ())}
        if any(quota.get(c, 0) > 0 for c in cats):
            chosen.append(image_id)
            for c in cats:
                if c in quota:
                    quota[c] -= 1
    return chosen
