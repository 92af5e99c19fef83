"""LightningDataModule: named training loaders (paired, unpaired blurry, unpaired sharp), named eval sets.

Training batches are dicts ``{"paired": {...}, "blur": {...}, "sharp": {...}}`` from a
:class:`~lightning.pytorch.utilities.CombinedLoader` in ``max_size_cycle`` mode (an epoch is the longest
loader; shorter ones restart). ``paired`` is present iff ``use_paired``; ``blur`` and ``sharp`` iff
``use_unpaired`` (the variant's ``paired``/``unpaired`` switches).

**Unpaired means unaligned.** Each loader draws its own permutation from its own seed (``seed + k``, k =
0, 1, 2 for paired, blur, sharp): a ``RandomSampler`` with a private generator on one process, a
``DistributedSampler(seed=seed + k)`` per loader under DDP. Lightning's own sampler injection would give
every loader a DistributedSampler with the *same* seed, which for equal-length unpaired sets yields the
same permutation, i.e. blurry image i always meets sharp image i. The trainer must therefore run with
``use_distributed_sampler=False`` (conf/trainer/default.yaml). Batch sizes are **per device**.

Datasets are built lazily in :meth:`setup` from Hydra ``_partial_`` factories, once. Val/test loaders come
as a list in the order of :attr:`val_names` / :attr:`test_names`, which name the metric namespaces
(``val/<name>/psnr``). Evaluation loaders are not sharded: every rank sees the whole (small) set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

__all__ = ["NeurMAPDataModule"]

Factory = Callable[[], Dataset]
# Training loaders: key in the combined batch, constructor argument, batch-size argument, seed offset.
_TRAIN = (
    ("paired", "paired", "batch_size_paired", 0),
    ("blur", "unpaired_blur", "batch_size_unpaired", 1),
    ("sharp", "unpaired_sharp", "batch_size_unpaired", 2),
)


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

    def train_sampler(self, key: str) -> Sampler:
        """The shuffling sampler of training loader ``key`` (``paired``, ``blur``, ``sharp``)."""
        offset = {t[0]: t[3] for t in _TRAIN}[key]
        dataset = self.train_sets[key]
        world_size, rank = self._world()
        if world_size > 1:
            return DistributedSampler(
                dataset,
                num_replicas=world_size,
                rank=rank,
                shuffle=True,
                seed=self.seed + offset,
                drop_last=True,
            )
        return RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed + offset))

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

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
            loaders[key] = self._loader(dataset, batch_size, sampler, drop_last=True)
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _eval_loaders(self, sets: dict[str, Dataset], names: list[str]) -> list[DataLoader]:
        return [self._loader(sets[n], self.batch_sizes["val"], None, drop_last=False) for n in names]

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per validation set, in the order of :attr:`val_names`."""
        self.setup("validate")
        return self._eval_loaders(self.val_sets, self.val_names)

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per test set, in the order of :attr:`test_names`."""
        self.setup("test")
        return self._eval_loaders(self.test_sets, self.test_names)
