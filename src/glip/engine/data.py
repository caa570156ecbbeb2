"""The trainer's data: the weighted training mixture, its resumable loader, and validation.

Resume is exact because everything about the stream is a function of the step: the loader
drops the last incomplete batch of an epoch, so step ``s`` is batch ``s % B`` of epoch ``s // B``
(``B`` batches per epoch and rank); the sampler is positioned there; each sample's prompt and
augmentation randomness comes from ``(seed, epoch, index)``, independent of workers.

Nothing of the loader touches the trainer's global generators or depends on when it started:

* the ``DataLoader`` draws its workers' base seed from its own generator, seeded from
  ``(seed, epoch, rank)`` at every epoch (by default it draws from the global torch generator at
  each ``iter(loader)``, so a run resumed mid-epoch would shift every later dropout mask);
* every sample is loaded, and every batch collated, with the global Python / NumPy / torch
  generators seeded from ``(seed, epoch, index)`` and from the batch content
  (:class:`SeededSamples`, :class:`SeededCollate`), so even a transform that draws from them is
  reproducible, in the main process or in any worker, with or without persistent workers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from glip.config import GLIPConfig
from glip.data import (
    CocoDataset,
    DetectionGroundingDataset,
    GroundingCollator,
    ImageTextDataset,
    MdetrGroundingDataset,
    MixedDataset,
    OdPromptOptions,
    RefExpGroundingDataset,
    TrainTransform,
    WeightedMixSampler,
)
from glip.data.coco import is_held_out
from glip.data.od_to_grounding import build_class_prompt
from glip.data.vl_datasets import CaptionGroundingDataset, VQAGroundingDataset
from glip.engine.checkpoint import derive_seed, forked_rng
from glip.engine.config import SourceSpec, TrainConfig, class_prompt
from glip.engine.distributed import DistInfo
from glip.errors import ConfigError
from glip.text import load_tokenizer

logger = logging.getLogger(__name__)

# Detection label ids of different datasets collide (1 = person in COCO, 1 = raccoon elsewhere):
# each source's labels are shifted by its position times this, so GLIPv2 label propagation only
# links boxes and tokens of the same dataset's class.
LABEL_SPACE_STRIDE = 100_000


class SeededSamples(Dataset):
    """A dataset whose every sample is loaded under global generators seeded from ``(seed, epoch, index)``.

    Args:
        dataset: indexed by ``(index, epoch)`` keys (:class:`MixedDataset`) or plain indices (epoch 0).
        seed: the run's seed.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)
        with forked_rng(derive_seed(self.seed, epoch, index)):
            return self.dataset[key]


class SeededCollate:
    """A collate function run under global generators seeded from the run's seed and the batch content.

    The content (image ids, kinds and prompt texts of the samples, in order) identifies the batch
    whatever process collates it; :class:`~glip.data.GroundingCollator` also seeds its MLM masking
    from it.
    """

    def __init__(self, collate: Callable[[Sequence[Any]], Any], seed: int) -> None:
        self.collate = collate
        self.seed = int(seed)

    def batch_seed(self, samples: Sequence[Any]) -> int:
        """A 63-bit seed from the run's seed and the samples' identities."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(str(self.seed).encode())
        for s in samples:
            text = getattr(getattr(s, "prompt", None), "text", None)
            digest.update(repr((getattr(s, "image_id", None), getattr(s, "kind", None), text)).encode())
        return int.from_bytes(digest.digest(), "little") >> 1

    def __call__(self, samples: Sequence[Any]) -> Any:
        with forked_rng(self.batch_seed(samples)):
            return self.collate(samples)


@dataclass
class TrainData:
    """Training loader factory and validation sources."""

    loader: DataLoader
    sampler: WeightedMixSampler
    batch_size: int
    world_size: int
    # batches per epoch and rank, fixed at construction (len(loader) shrinks once the sampler is positioned)
    epoch_batches: int
    val: list[SourceSpec] = field(default_factory=list)
    config: GLIPConfig | None = None
    tokenizer: Any = None

    @property
    def batches_per_epoch(self) -> int:
        """Batches per epoch and rank (the incomplete last batch is dropped)."""
        return self.epoch_batches

    def state_dict(self, step: int) -> dict[str, Any]:
        """Where the stream stands after ``step`` optimiser steps."""
        epoch, batch = divmod(step, self.batches_per_epoch)
        return {
            "step": step, "epoch": epoch, "batch": batch, "sampler_seed": self.sampler.seed,
            "world_size": self.world_size,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Check a saved position against this data (the position itself follows from the step).

        Raises:
            ConfigError: if the run's data, seed or number of processes changed since the checkpoint.
        """
        if int(state["sampler_seed"]) != self.sampler.seed:
            raise ConfigError("the checkpoint was written with another run.seed: resume with the same recipe")
        saved_world = int(state.get("world_size", self.world_size))
        if saved_world != self.world_size:
            raise ConfigError(
                f"the checkpoint was written by {saved_world} process(es) and this run has {self.world_size}: "
                f"resume on {saved_world} (torchrun --nproc_per_node {saved_world}) or start a new run"
            )
        epoch, batch = divmod(int(state["step"]), self.batches_per_epoch)
        if (epoch, batch) != (int(state["epoch"]), int(state["batch"])):
            raise ConfigError(
                "the training data changed since the checkpoint (different batches per epoch): "
                "resume with the same data, batch size and world size"
            )

    def batches(self, start_step: int) -> Iterator[Any]:
        """Endless batches from the position of ``start_step``.

        Closing the generator (``.close()``, or an exception in the loop that drives it) stops the
        loader's worker processes at once, instead of whenever the garbage collector gets to them.
        """
        epoch, batch = divmod(start_step, self.batches_per_epoch)
        try:
            while True:
                self.sampler.set_epoch(epoch)
                offset = batch * self.batch_size * self.world_size
                self.sampler.load_state_dict({"seed": self.sampler.seed, "epoch": epoch, "offset": offset})
                if self.loader.generator is not None:  # the workers' base seed: a function of the epoch
                    self.loader.generator.manual_seed(derive_seed(self.sampler.seed, epoch, self.sampler.rank))
                yield from self.loader
                epoch, batch = epoch + 1, 0
        finally:
            self.stop_workers()

    def stop_workers(self) -> None:
        """Shut the loader's (persistent) worker processes down; the next epoch starts new ones."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None

    def evaluate(self, model: torch.nn.Module, device: torch.device, progress: bool = False) -> dict[str, float]:
        """COCO AP / AP50 of every detection validation source (``progress``: a bar per source).

        The prompt is the evaluation prompt of the source: its class names in id order with its
        ``prompt_overrides`` and ``caption_prompts``.
        """
        from glip.evaluation.detection import evaluate_coco_dataset
        from glip.evaluation.prompts import dataset_prompt
        from glip.predictor import GLIPPredictor
        from glip.processing import GLIPProcessor

        processor = GLIPProcessor.from_config(model.config, self.tokenizer)  # type: ignore[attr-defined]
        predictor = GLIPPredictor(model, processor, device)  # type: ignore[arg-type]
        out: dict[str, float] = {}
        for spec in self.val:
            if spec.kind != "detection":
                logger.warning("validation source %s: only detection sources are scored during training", spec.name)
                continue
            dataset = CocoDataset.load(spec.annotations, spec.images)
            override: dict[str, Any] = {"categories": spec.prompt_overrides} if spec.prompt_overrides else {}
            if spec.caption_prompts is not None:
                override["caption_prompt"] = spec.caption_prompts
            prompt = dataset_prompt(dataset.category_names, override or None)
            _, metrics = evaluate_coco_dataset(
                predictor, dataset, prompt, batch_size=1, progress=progress, name=spec.name
            )
            out[f"{spec.name}/AP"] = metrics.stats["AP"]
            out[f"{spec.name}/AP50"] = metrics.stats["AP50"]
        aps = [v for k, v in out.items() if k.endswith("/AP") and v >= 0]
        if aps:
            out["mean_AP"] = sum(aps) / len(aps)
        return out


def build_source(
    spec: SourceSpec,
    position: int,
    config: TrainConfig,
    model_config: GLIPConfig,
    tokenizer: Any,
    extra_negatives: tuple[str, ...] = (),
):
    """The dataset of one training source (``spec.kind``: detection, refexp, vqa, caption, grounding or image_text).

    A refexp source reads its boxes and masks from ``spec.instances``; its images are found under
    ``spec.images`` or beside that instances file (``<dataset>/images``).
    """
    d, inp = config.data, model_config.input
    transform = TrainTransform(
        min_sizes=tuple(d.min_sizes), max_size=d.max_size, flip_prob=d.flip_prob, input_format=inp.input_format,
        pixel_mean=inp.pixel_mean, pixel_std=inp.pixel_std,
    )  # fmt: skip
    seed = config.run.seed + 7919 * position
    if spec.kind == "detection":
        coco = CocoDataset.load(spec.annotations, spec.images)
        fixed = class_prompt(config) == "fixed"
        options = (
            OdPromptOptions(mode="all_classes", shuffle=False)
            if fixed
            else OdPromptOptions(random_sample_negative=d.max_negatives)
        )
        dataset = DetectionGroundingDataset(
            coco, tokenizer, transform, options=options, prompt_overrides=spec.prompt_overrides or None,
            caption_prompts=spec.caption_prompts, seed=seed, label_offset=LABEL_SPACE_STRIDE * position,
            few_shot=spec.few_shot or 0, few_shot_seed=spec.few_shot_seed if spec.few_shot else None,
            extra_negatives=() if fixed else extra_negatives, masks=spec.masks, holdout_every=spec.holdout_every,
        )  # fmt: skip
        if fixed:
            check_fixed_prompt(dataset, spec.name, tokenizer, model_config.text.max_query_len)
        return dataset
    if spec.kind == "refexp":
        assert spec.instances is not None  # checked by TrainConfig.validate
        instances = CocoDataset.load(spec.instances, spec.images)
        return RefExpGroundingDataset(
            spec.annotations, instances, transform, seed=seed, masks=spec.masks, holdout_every=spec.holdout_every
        )
    if spec.kind in ("vqa", "caption"):
        assert spec.instances is not None  # checked by TrainConfig.validate
        instances = CocoDataset.load(spec.instances, spec.images)
        if spec.kind == "caption":
            return CaptionGroundingDataset(
                spec.annotations, instances, transform, seed=seed, holdout_every=spec.holdout_every
            )
        if model_config.heads.vqa is None:
            raise ConfigError(f"source {spec.name!r} is VQA data but the model has no VQA head: add heads.vqa")
        return VQAGroundingDataset(
            spec.annotations, instances, model_config.heads.vqa.answers, transform, seed=seed,
            holdout_every=spec.holdout_every,
        )  # fmt: skip
    if spec.kind == "grounding":
        return MdetrGroundingDataset(spec.annotations, spec.images, transform, seed=seed)
    return ImageTextDataset(spec.annotations, spec.images, transform, seed=seed, score_threshold=spec.min_score)


def check_fixed_prompt(dataset: DetectionGroundingDataset, name: str, tokenizer: Any, max_query_len: int) -> None:
    """A fixed class prompt must fit the text encoder whole (it is not chunked during training).

    Raises:
        ConfigError: naming the source, its token count and what to do.
    """
    vocab = dataset.vocab
    prompt = build_class_prompt(list(vocab.category_ids), vocab)
    tokens = len(tokenizer(prompt.text)["input_ids"])
    if tokens > max_query_len:
        raise ConfigError(
            f"data.train source {name!r}: the prompt of all {len(vocab)} classes has {tokens} tokens, more than the "
            f"{max_query_len} the model reads: fixed class prompts need one prompt; shorten the class names or use "
            "data.class_prompt: sampled (not with prompt tuning)"
        )
    logger.info("%s: fixed class prompt of %d tokens: %r", name, tokens, prompt.text[:120])


def _prompt_words(spec: SourceSpec) -> list[str]:
    """The words a detection source puts in prompts for its classes (overrides applied)."""
    names = CocoDataset.load(spec.annotations, spec.images, check_files=False).category_names
    return [spec.prompt_overrides.get(n, n) for n in names]


def build_train_data(config: TrainConfig, model_config: GLIPConfig, dist: DistInfo) -> TrainData:
    """Datasets, mixing sampler, collator and loader for a recipe.

    Raises:
        ConfigError: if the recipe has no training source or an epoch has fewer samples than a batch.
    """
    if not config.data.train:
        raise ConfigError("the recipe lists no training data (data.train)")
    tokenizer = load_tokenizer(model_config.text.tokenizer)
    words = [_prompt_words(s) if s.kind == "detection" else [] for s in config.data.train]
    datasets = []
    for i, spec in enumerate(config.data.train):
        others: tuple[str, ...] = ()
        if config.data.cross_dataset_negatives and spec.kind == "detection":
            others = tuple(sorted({w for j, ws in enumerate(words) if j != i for w in ws}))
        datasets.append(build_source(spec, i, config, model_config, tokenizer, others))
    names = [s.name for s in config.data.train]
    mixed = MixedDataset(datasets, names)
    sampler = WeightedMixSampler(
        [len(ds) for ds in datasets], [s.weight for s in config.data.train], seed=config.run.seed,
        rank=dist.rank, world_size=dist.world_size,
    )  # fmt: skip
    lo, t = model_config.loss, model_config.text
    collator = GroundingCollator(
        tokenizer, max_query_len=t.max_query_len, pad_to_max=t.pad_to_max,
        size_divisibility=model_config.input.size_divisibility, mlm=lo.mlm, mlm_probability=lo.mlm_probability,
        seed=config.run.seed,
    )  # fmt: skip
    workers = config.data.num_workers
    seed = config.run.seed
    loader = DataLoader(
        SeededSamples(mixed, seed), batch_size=config.data.batch_size, sampler=sampler,
        collate_fn=SeededCollate(collator, seed), num_workers=workers, drop_last=True,
        pin_memory=dist.device.type == "cuda", persistent_workers=workers > 0, generator=torch.Generator(),
    )  # fmt: skip
    if len(loader) == 0:
        raise ConfigError(
            f"an epoch has {len(sampler)} samples per rank, fewer than data.batch_size={config.data.batch_size}"
        )
    logger.info("training mixture %s: %d samples per epoch and rank, %d batches", names, len(sampler), len(loader))
    return TrainData(
        loader,
        sampler,
        config.data.batch_size,
        dist.world_size,
        len(loader),
        list(config.data.val),
        model_config,
        tokenizer,
    )


def fill_answer_vocabulary(config: TrainConfig, min_count: int = 1, max_size: int = 3000) -> TrainConfig:
    """A recipe that adds a VQA head without answers (``heads.vqa: {}``) gets the vocabulary of its VQA
    sources: every answer with a positive score in at least ``min_count`` questions, most frequent
    first (:class:`glip.evaluation.vqa.AnswerVocabulary`). Other recipes are returned unchanged.
    """
    import copy

    from glip.data.vqa import load_vqa
    from glip.evaluation.vqa import AnswerVocabulary

    head = config.model.overrides.get("heads.vqa")
    if not isinstance(head, dict) or head.get("answers"):
        return config
    sources = [s for s in config.data.train if s.kind == "vqa"]
    if not sources:
        raise ConfigError("heads.vqa has no answers and the recipe has no vqa source to build them from")
    records = [r for s in sources for r in load_vqa(s.annotations, check_files=False).records
               if not is_held_out(r.image_id, s.holdout_every)]  # fmt: skip
    vocabulary = AnswerVocabulary.build(records, min_count=min_count, max_size=max_size)
    out = copy.deepcopy(config)
    out.model.overrides["heads.vqa"] = {**head, "answers": list(vocabulary.answers)}
    logger.info("VQA answer vocabulary: %d answers from %d questions", len(vocabulary), len(records))
    return out
