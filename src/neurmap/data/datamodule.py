"""LightningDataModule: named training loaders (paired, unpaired blurry, unpaired sharp), named eval sets.

Training batches are dicts ``{"paired": {...}, "blur": {...}, "sharp": {...}}`` from a
:class:`~lightning.pytorch.utilities.CombinedLoader` in ``max_size_cycle`` mode (an epoch is the longest
loader; shorter ones restart). ``paired`` is present iff ``use_paired``; ``blur`` and ``sharp`` iff
``use_unpaired`` (the variant's ``paired``/``unpaired`` switches).

**Unpaired means unaligned.** Each loader draws its own permutations from its own seed (``seed + k``, k =
0, 1, 2 for paired, blur, sharp), sharded over the processes under DDP by :class:`EpochSampler`.
Lightning's own sampler injection would give every loader a DistributedSampler with the *same* seed, which
for equal-length unpaired sets yields the same permutation, i.e. blurry image i always meets sharp image i.
The trainer must therefore run with ``use_distributed_sampler=False`` (conf/trainer/default.yaml). Batch
sizes are **per device**.

**Exact resume.** The data a run sees is a pure function of the seed and of the training position: the
j-th pass over loader k uses permutation ``(seed + k, j)``, and each sample's augmentation draws from its
own generator seeded by ``(seed + k, j, position)`` (:class:`_SeededDataset`), never from the global RNG.
Every Lightning epoch re-iterates all loaders; the shorter ones restart within it (``max_size_cycle``). The
training loaders are Lightning ``Stateful`` (:class:`ResumableLoader`): a checkpoint stores the epoch and
the batches consumed in it, and a resumed run continues every loader at the same pass and batch, so an
interrupted-and-resumed run sees exactly the batches of an uninterrupted one.

Datasets are built lazily in :meth:`setup` from Hydra ``_partial_`` factories, once. Val/test loaders come
as a list in the order of :attr:`val_names` / :attr:`test_names`, which name the metric namespaces
(``val/<name>/psnr``). Evaluation loaders are not sharded: every rank sees the whole (small) set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["EpochSampler", "NeurMAPDataModule", "ResumableLoader"]

Factory = Callable[[], Dataset]
# Training loaders: key in the combined batch, constructor argument, batch-size argument, seed offset.
_TRAIN = (
    ("paired", "paired", "batch_size_paired", 0),
    ("blur", "unpaired_blur", "batch_size_unpaired", 1),
    ("sharp", "unpaired_sharp", "batch_size_unpaired", 2),
)


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffled ``(index, sample_seed)`` pairs: pass ``j`` is a permutation drawn from ``(seed, j)``, sharded
    over ``num_replicas`` processes (rank r takes every r-th entry of the first ``n // num_replicas *
    num_replicas``), starting ``start`` samples in. ``sample_seed`` seeds the sample's augmentation.

    Args:
        size: dataset length.
        seed: this loader's seed.
        num_replicas: processes sharing the data (DDP world size).
        rank: this process.
    """

    def __init__(self, size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.size, self.seed, self.num_replicas, self.rank = int(size), int(seed), int(num_replicas), int(rank)
        self.pass_index = 0
        self.start = 0

    def __len__(self) -> int:
        return self.size // self.num_replicas

    def set_position(self, pass_index: int, start: int) -> None:
        """The next iteration is pass ``pass_index``, from its ``start``-th sample on this process."""
        self.pass_index, self.start = int(pass_index), int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        sequence = np.random.SeedSequence([self.seed, self.pass_index])
        generator = torch.Generator().manual_seed(int(sequence.generate_state(1, np.uint64)[0]))
        order = torch.randperm(self.size, generator=generator)[: len(self) * self.num_replicas].tolist()
        seeds = sequence.spawn(1)[0].generate_state(len(order), np.uint32).tolist()
        for position in range(self.rank, len(order), self.num_replicas)[self.start :]:
            yield order[position], seeds[position]


class _SeededDataset(Dataset):
    """``dataset[i]`` computed with torch's global RNG seeded by the sample's own seed (and restored after),
    so augmentations depend on the data position only, not on what ran before (exact resume, any workers)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class ResumableLoader(DataLoader):
    """A training DataLoader over an :class:`EpochSampler` whose position Lightning checkpoints.

    Each ``iter()`` starts the next pass of the sampler. ``state_dict()`` reads the training position from
    ``position()`` (Lightning epoch, batches consumed in it) and ``load_state_dict()`` turns it back into
    this loader's pass and offset, given ``epoch_batches`` (batches of a Lightning epoch: the longest loader).
    """

    def __init__(
        self, dataset: Dataset, sampler: EpochSampler, position: Callable[[], tuple[int, int]], **kwargs: Any
    ) -> None:
        super().__init__(_SeededDataset(dataset), sampler=sampler, drop_last=True, **kwargs)
        self.position = position
        self.epoch_batches = len(self)
        self._next = (0, 0)

    def __iter__(self) -> Iterator[Any]:
        pass_index, skip = self._next
        self._next = (pass_index + 1, 0)
        self.sampler.set_position(pass_index, skip * self.batch_size)
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.position()
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= self.epoch_batches:  # saved at the end of an epoch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        per_epoch = math.ceil(self.epoch_batches / len(self))  # passes of this loader in one Lightning epoch
        self._next = (epoch * per_epoch + batches // len(self), batches % len(self))


class NeurMAPDataModule(L.LightningDataModule):
    """Builds NeurMAP's training and evaluation loaders from dataset factories.

    Args:
        paired: factory of the paired set (samples ``{"blur", "sharp", "name"}``); needed iff ``use_paired``.
        unpaired_blur: factory of the unpaired blurry set (``{"blur", "name"}``); needed iff ``use_unpaired``.
        unpaired_sharp: factory of the unpaired sharp set (``{"sharp", "name"}``); needed iff
            ``use_unpaired``.
        val: validation sets, name -> factory (samples ``{"blur", "sharp"?, "motion"?, "name"}``).
        test: test sets, name -> factory.
        batch_size_paired: paired images per batch, per device.
        batch_size_unpaired: blurry and sharp images per batch each, per device.
        batch_size_val: images per evaluation batch.
        num_workers: DataLoader worker processes per loader (workers persist across epochs when > 0).
        pin_memory: pin host memory (GPU training).
        seed: base seed of the training-loader shuffles (loader k uses ``seed + k``).
        use_paired: include the ``paired`` loader.
        use_unpaired: include the ``blur`` and ``sharp`` loaders.
    """

    def __init__(
        self,
        paired: Factory | None = None,
        unpaired_blur: Factory | None = None,
        unpaired_sharp: Factory | None = None,
        val: Mapping[str, Factory] | None = None,
        test: Mapping[str, Factory] | None = None,
        batch_size_paired: int = 4,
        batch_size_unpaired: int = 4,
        batch_size_val: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        use_paired: bool = True,
        use_unpaired: bool = True,
    ) -> None:
        super().__init__()
        if not (use_paired or use_unpaired):
            raise ValueError("data: use_paired and use_unpaired are both false; enable at least one training loader")
        factories = {"paired": paired, "unpaired_blur": unpaired_blur, "unpaired_sharp": unpaired_sharp}
        needed = (["paired"] if use_paired else []) + (["unpaired_blur", "unpaired_sharp"] if use_unpaired else [])
        for arg in needed:
            if factories[arg] is None:
                switch = "use_paired" if arg == "paired" else "use_unpaired"
                raise ValueError(f"data.{arg} is missing: it is needed because {switch} is true")
        for name, value in (
            ("batch_size_paired", batch_size_paired),
            ("batch_size_unpaired", batch_size_unpaired),
            ("batch_size_val", batch_size_val),
        ):
            if int(value) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.factories = factories
        self.val = dict(val or {})
        self.test = dict(test or {})
        self.val_names: list[str] = list(self.val)
        self.test_names: list[str] = list(self.test)
        self.batch_sizes = {
            "paired": int(batch_size_paired),
            "unpaired": int(batch_size_unpaired),
            "val": int(batch_size_val),
        }
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self.use_paired = bool(use_paired)
        self.use_unpaired = bool(use_unpaired)
        self.train_sets: dict[str, Dataset] = {}
        self.val_sets: dict[str, Dataset] = {}
        self.test_sets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ setup
    def _train_keys(self) -> list[tuple[str, str, str, int]]:
        return [t for t in _TRAIN if (self.use_paired if t[0] == "paired" else self.use_unpaired)]

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs (``fit``, ``validate``, ``test``; None = all), each once."""
        if stage in (None, "fit"):
            for key, arg, _, _ in self._train_keys():
                if key not in self.train_sets:
                    self.train_sets[key] = self.factories[arg]()
        if stage in (None, "fit", "validate"):
            self.val_sets |= {n: f() for n, f in self.val.items() if n not in self.val_sets}
        if stage in (None, "test"):
            self.test_sets |= {n: f() for n, f in self.test.items() if n not in self.test_sets}

    # ------------------------------------------------------------ dataloaders
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def train_sampler(self, key: str) -> EpochSampler:
        """The shuffling sampler of training loader ``key`` (``paired``, ``blur``, ``sharp``)."""
        offset = {t[0]: t[3] for t in _TRAIN}[key]
        world_size, rank = self._world()
        return EpochSampler(len(self.train_sets[key]), self.seed + offset, world_size, rank)

    def _position(self) -> tuple[int, int]:
        """(Lightning epoch, training batches consumed in it), for the loaders' checkpointed state."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _loader_options(self) -> dict[str, Any]:
        # a private generator: creating an iterator must not draw from the global RNG (exact resume)
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
            "generator": torch.Generator().manual_seed(self.seed),
        }

    def train_dataloader(self) -> CombinedLoader:
        """Dict of the enabled training loaders, each shuffled on its own, combined in ``max_size_cycle``."""
        self.setup("fit")
        loaders = {}
        for key, arg, size_arg, _ in self._train_keys():
            dataset = self.train_sets[key]
            batch_size = self.batch_sizes["paired" if key == "paired" else "unpaired"]
            sampler = self.train_sampler(key)
            if len(sampler) < batch_size:
                raise ValueError(
                    f"data.{arg} gives {len(sampler)} images per process, fewer than "
                    f"data.{size_arg}={batch_size} (train loaders drop incomplete batches)"
                )
            loaders[key] = ResumableLoader(
                dataset, sampler, self._position, batch_size=batch_size, **self._loader_options()
            )
        longest = max(len(loader) for loader in loaders.values())
        for loader in loaders.values():
            loader.epoch_batches = longest
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _eval_loaders(self, sets: dict[str, Dataset], names: list[str]) -> list[DataLoader]:
        size = self.batch_sizes["val"]
        return [DataLoader(sets[n], batch_size=size, shuffle=False, **self._loader_options()) for n in names]

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per validation set, in the order of :attr:`val_names`."""
        self.setup("validate")
        return self._eval_loaders(self.val_sets, self.val_names)

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per test set, in the order of :attr:`test_names`."""
        self.setup("test")
        return self._eval_loaders(self.test_sets, self.test_names)
