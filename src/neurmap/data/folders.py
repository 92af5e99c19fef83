"""Datasets over image files on disk, built from the records of :mod:`neurmap.data.layouts`.

* :class:`PairedImages`: ``{"blur", "sharp", "name"}`` (plus ``motion`` where the layout has it, e.g.
  ``kernel_synth`` with ``with_motion: true``), the same crop and flip on all (PairedTransform).
* :class:`UnpairedImages`: ``{<key>, "name"}`` with ``key`` = ``blur`` or ``sharp``: one side of any layout
  (RealBlur's blurry images, a URB folder, ...). Two of these, each shuffled by its own sampler, make an
  unpaired pair of domains in which no pairing can leak (the authors' loader returned each blurry image's
  ground truth as its "unpaired" partner).
* :class:`EvalImages`: whole images for validation and test: ``blur``, plus ``sharp`` and ``motion``
  (ground-truth full blur in px, (2, H, W), channel 0 vertical) where the layout has them.

Images are read at full resolution; nothing is resized. The authors' loaders resized everything to
1280x720 first, which rescales the blur of every non-GoPro set anisotropically; here crops come from the
original pixels, and an image smaller than the crop is padded (one warning).

Bad files: ``on_error="raise"`` (default) stops with the file named; ``"skip"`` warns with the file and the
running count of skipped items, and returns the next readable item instead, so a few corrupt files do not
end a long run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from neurmap.data.io import ImageReadError, read_image, read_mfmap

__all__ = ["EvalImages", "PairedImages", "UnpairedImages"]

Transform = Callable[[dict[str, Any]], dict[str, Any]]
_ON_ERROR = ("raise", "skip")


class _FileDataset(Dataset):
    """Reads the ``keys`` of each record; shared error handling for the three datasets."""

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        keys: Sequence[str],
        optional: Sequence[str] = (),
        transform: Transform | None = None,
        on_error: str = "raise",
    ) -> None:
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
        records = list(records)
        if not records:
            raise ValueError(f"{type(self).__name__}: no records (an empty layout)")
        for key in keys:
            if key not in records[0]:
                raise ValueError(f"{type(self).__name__}: records have no {key!r} files, only {sorted(records[0])}")
        self.records = records
        self.keys = [*keys, *(k for k in optional if k in records[0])]
        self.transform = transform
        self.on_error = on_error
        self.skipped: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        sample: dict[str, Any] = {}
        for key in self.keys:
            sample[key] = read_mfmap(record[key]) if key == "motion" else read_image(record[key])
        shapes = {k: tuple(v.shape[-2:]) for k, v in sample.items()}
        if len(set(shapes.values())) > 1:
            files = ", ".join(f"{record[k]} {h}x{w}" for k, (h, w) in shapes.items())
            raise ImageReadError(f"size mismatch within one item: {files}")
        sample["name"] = self._name(record)
        return sample

    def _name(self, record: dict[str, Any]) -> str:
        return str(record.get("name", Path(record[self.keys[0]]).stem))

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self.records)):
            i = (index + attempt) % len(self.records)
            if i in self.skipped:
                continue
            try:
                sample = self._read(i)
            except ImageReadError as err:
                if self.on_error == "raise":
                    raise
                self.skipped.add(i)
                warnings.warn(
                    f"skipped an unreadable item ({len(self.skipped)} of {len(self.records)} so far in this "
                    f"process): {err}",
                    stacklevel=2,
                )
                continue
            if self.transform is None:
                return sample
            try:
                return self.transform(sample)
            except ValueError as err:  # e.g. a pair of different sizes: name the files
                files = ", ".join(str(self.records[i][k]) for k in self.keys if k in self.records[i])
                raise ImageReadError(f"{files}: {err}") from None
        raise ImageReadError(f"{type(self).__name__}: none of the {len(self.records)} items is readable")


class PairedImages(_FileDataset):
    """Aligned blurry/sharp pairs for the content loss.

    Args:
        records: records with ``blur`` and ``sharp`` paths (:func:`neurmap.data.layouts.gopro`, ...), and
            optionally ``motion`` (ground truth read as well: motion pretraining can supervise M with it).
        transform: applied to the sample dict (usually :class:`~neurmap.data.transforms.PairedTransform`).
        on_error: ``raise`` or ``skip`` unreadable or size-mismatched pairs.
    """

    def __init__(
        self, records: Sequence[dict[str, Any]], transform: Transform | None = None, on_error: str = "raise"
    ) -> None:
        super().__init__(records, ("blur", "sharp"), optional=("motion",), transform=transform, on_error=on_error)


class UnpairedImages(_FileDataset):
    """One side (``blur`` or ``sharp``) of a layout, as an unpaired domain.

    Args:
        records: records holding ``key``.
        key: ``blur`` or ``sharp``; the sample's image key.
        transform: applied to the sample dict (usually :class:`~neurmap.data.transforms.SingleTransform`).
        on_error: ``raise`` or ``skip`` unreadable images.
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        key: str,
        transform: Transform | None = None,
        on_error: str = "raise",
    ) -> None:
        if key not in ("blur", "sharp"):
            raise ValueError(f"UnpairedImages key must be 'blur' or 'sharp', got {key!r}")
        # the blurry side carries its ground-truth motion where the records have it (the oracle-motion ablation)
        optional = ("motion",) if key == "blur" else ()
        super().__init__(records, (key,), optional=optional, transform=transform, on_error=on_error)
        self.key = key

    def _name(self, record: dict[str, Any]) -> str:
        # a record's name describes its blurry file; the sharp side of a paired layout names its own file
        if self.key == "sharp" and "blur" in record:
            return "/".join(Path(record["sharp"]).with_suffix("").parts[-3:])
        return super()._name(record)


class EvalImages(_FileDataset):
    """Whole images for evaluation: ``blur`` and, where the records have them, ``sharp`` and ``motion``.

    Args:
        records: records with ``blur`` (and optionally ``sharp``, ``motion``).
        on_error: ``raise`` (default: a metric over a silently smaller set misleads) or ``skip``.
    """

    def __init__(self, records: Sequence[dict[str, Any]], on_error: str = "raise") -> None:
        super().__init__(records, ("blur",), optional=("sharp", "motion"), on_error=on_error)
