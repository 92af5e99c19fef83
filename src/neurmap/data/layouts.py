"""Folder layouts of the datasets NeurMAP trains and evaluates on, as lists of file records.

Each function scans one on-disk layout and returns records ``{"blur": Path, "sharp": Path, "motion": Path,
"name": str}`` (keys present as the layout provides them), sorted and checked: a missing or empty folder,
an unpaired file or a bad list line raises one line naming the path and the layout expected there. The
datasets of :mod:`neurmap.data.folders` read the records; Hydra configs call these functions through
``_target_`` so that a missing root is reported when the config is instantiated, before training.

Layouts (README "Data"):

* :func:`gopro`: ``GOPRO_Large/<split>/<sequence>/{blur,blur_gamma,sharp}/*.png`` (Nah et al., CVPR'17);
  the blurry folder is chosen explicitly (``blur`` is what NeurMAP's configs read).
* :func:`realblur`: RealBlur-J/-R through the official list files ``RealBlur_J_train_list.txt`` etc.,
  each line ``<gt path> <blur path>`` relative to the RealBlur root (Rim et al., ECCV'20).
* :func:`kernel_synth`: Gong et al.'s generator output (``python -m neurmap.synthesize``):
  ``<name>_blurryimg.png``, ``<name>_gtimg.png`` and ``<name>_mfmap.mat`` (ground-truth motion).
* :func:`paired_folders`: generic ``<root>/input/...`` and ``<root>/target/...`` with equal relative paths.
* :func:`image_folder`: every image under a folder, recursively (URB-style unpaired sets: per-scene
  sub-folders, no ground truth).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from neurmap.data.io import list_images, require_dir

__all__ = ["gopro", "image_folder", "kernel_synth", "paired_folders", "realblur", "select"]

Record = dict[str, "Path | str"]

GOPRO_LAYOUT = "GOPRO_Large/<split>/<sequence>/{blur,blur_gamma,sharp}/*.png"
KERNEL_SYNTH_LAYOUT = "<name>_blurryimg.png, <name>_gtimg.png and <name>_mfmap.mat files (python -m neurmap.synthesize)"


def _name(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def select(records: list[Record], max_images: int | None) -> list[Record]:
    """At most ``max_images`` records spread evenly over the list (deterministic); None keeps all."""
    if max_images is None or max_images >= len(records):
        return records
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1 or null, got {max_images}")
    step = len(records) / max_images
    return [records[int(i * step)] for i in range(max_images)]


def gopro(
    root: str | os.PathLike, split: str = "train", blur_dir: str = "blur", max_images: int | None = None
) -> list[Record]:
    """Pairs of the GoPro dataset (``GOPRO_Large``): ``<root>/<split>/<sequence>/<blur_dir>/<frame>.png`` with
    ``<root>/<split>/<sequence>/sharp/<frame>.png``.

    Args:
        root: the ``GOPRO_Large`` folder.
        split: ``train`` or ``test``.
        blur_dir: ``blur`` (linear averaging; NeurMAP's and most papers' choice) or ``blur_gamma``.
        max_images: keep this many pairs spread over the split (null: all).

    Returns:
        Records with ``blur``, ``sharp`` and ``name`` = ``<sequence>/<frame>``.
    """
    split_dir = require_dir(Path(root) / split, f"the GoPro layout {GOPRO_LAYOUT}")
    sequences = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sequences:
        raise FileNotFoundError(f"{split_dir} has no sequence folders; expected {GOPRO_LAYOUT}")
    records: list[Record] = []
    for sequence in sequences:
        expected = f"{sequence}/{blur_dir} and {sequence}/sharp with the same frame names ({GOPRO_LAYOUT})"
        blurs = list_images(sequence / blur_dir, expected, recursive=False)
        sharp_dir = require_dir(sequence / "sharp", expected)
        for blur in blurs:
            sharp = sharp_dir / blur.name
            if not sharp.is_file():
                raise FileNotFoundError(f"{blur} has no sharp counterpart {sharp}; expected {expected}")
            records.append({"blur": blur, "sharp": sharp, "name": f"{sequence.name}/{blur.stem}"})
    return select(records, max_images)


def _realblur_line(line: str, list_file: Path, number: int, root: Path) -> Record:
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"{list_file}:{number}: expected '<gt path> <blur path>', got {line!r}")
    first, second = (Path(p) for p in parts[:2])
    # The official lists put the ground truth first (.../gt/gt_1.png .../blur/blur_1.png); trust the folder
    # names over the order when they say otherwise.
    sharp, blur = (second, first) if "blur" in first.parts[:-1] and "gt" in second.parts[:-1] else (first, second)
    record: Record = {"blur": root / blur, "sharp": root / sharp}
    for key in ("blur", "sharp"):
        if not Path(record[key]).is_file():
            raise FileNotFoundError(
                f"{list_file}:{number}: {record[key]} does not exist; list paths are relative to {root}"
            )
    scene = blur.parts[-3] if len(blur.parts) >= 3 else ""
    record["name"] = f"{scene}/{blur.stem}" if scene else blur.stem
    return record


def realblur(
    root: str | os.PathLike,
    subset: str = "J",
    split: str = "train",
    list_file: str | None = None,
    max_images: int | None = None,
) -> list[Record]:
    """Pairs of RealBlur-J or RealBlur-R read through the official list files.

    Args:
        root: the RealBlur folder holding ``RealBlur-J_ECC_IMCORR_centroid_itensity_ref/``,
            ``RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref/`` and ``RealBlur_{J,R}_{train,test}_list.txt``.
        subset: ``J`` (camera JPEGs) or ``R`` (raw, processed).
        split: ``train`` or ``test``.
        list_file: a list file to read instead of ``RealBlur_<subset>_<split>_list.txt`` (relative to root).
        max_images: keep this many pairs spread over the list (null: all).

    Returns:
        Records with ``blur``, ``sharp`` and ``name`` = ``<scene>/<blur stem>``.
    """
    if subset not in ("J", "R"):
        raise ValueError(f"RealBlur subset must be 'J' or 'R', got {subset!r}")
    root = require_dir(root, "the RealBlur folder with RealBlur_J_train_list.txt and the scene folders")
    path = root / (list_file or f"RealBlur_{subset}_{split}_list.txt")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected RealBlur's official list file in {root}")
    lines = [(i, line.strip()) for i, line in enumerate(path.read_text().splitlines(), 1)]
    records = [_realblur_line(line, path, i, root) for i, line in lines if line and not line.startswith("#")]
    if not records:
        raise FileNotFoundError(f"{path} lists no image pairs; expected lines '<gt path> <blur path>'")
    return select(records, max_images)


def kernel_synth(root: str | os.PathLike, with_motion: bool = True, max_images: int | None = None) -> list[Record]:
    """Items of a kernel-synthesized set (Gong et al.'s layout), searched recursively under ``root``.

    Args:
        root: folder of ``<name>_blurryimg.png`` / ``<name>_gtimg.png`` / ``<name>_mfmap.mat`` triples.
        with_motion: require and return the ``mfmap`` ground-truth motion.
        max_images: keep this many items spread over the set (null: all).

    Returns:
        Records with ``blur``, ``sharp``, ``motion`` (if ``with_motion``) and ``name``.
    """
    root = require_dir(root, KERNEL_SYNTH_LAYOUT)
    blurs = sorted(p for p in root.rglob("*_blurryimg.png") if not p.name.startswith("."))
    if not blurs:
        raise FileNotFoundError(f"{root} holds no *_blurryimg.png; expected {KERNEL_SYNTH_LAYOUT}")
    records: list[Record] = []
    for blur in blurs:
        stem = blur.name[: -len("_blurryimg.png")]
        record: Record = {"blur": blur, "sharp": blur.with_name(f"{stem}_gtimg.png")}
        if with_motion:
            record["motion"] = blur.with_name(f"{stem}_mfmap.mat")
        for key, path in record.items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"{blur} has no {key} file {path}; expected {KERNEL_SYNTH_LAYOUT}")
        record["name"] = (blur.parent / stem).relative_to(root).as_posix()
        records.append(record)
    return select(records, max_images)


def paired_folders(
    root: str | os.PathLike,
    input_dir: str = "input",
    target_dir: str = "target",
    max_images: int | None = None,
) -> list[Record]:
    """Pairs of a generic paired set: ``<root>/<input_dir>/<rel>`` (blurry) with ``<root>/<target_dir>/<rel>``
    (sharp), matched by relative path without the suffix (``a.jpg`` may pair with ``a.png``), recursively.

    Returns:
        Records with ``blur``, ``sharp`` and ``name`` = the relative path without suffix.
    """
    layout = f"{Path(root) / input_dir} and {Path(root) / target_dir} with the same file names"
    blurs = list_images(Path(root) / input_dir, layout)
    sharps = list_images(Path(root) / target_dir, layout)
    sharp_dir = Path(root) / target_dir
    by_name = {_name(p, sharp_dir): p for p in sharps}
    blur_dir = Path(root) / input_dir
    records: list[Record] = []
    for blur in blurs:
        name = _name(blur, blur_dir)
        if name not in by_name:
            raise FileNotFoundError(f"{blur} has no target {sharp_dir / name}.*; expected {layout}")
        records.append({"blur": blur, "sharp": by_name[name], "name": name})
    return select(records, max_images)


def image_folder(
    root: str | os.PathLike,
    key: str = "blur",
    recursive: bool = True,
    exclude: Sequence[str] = (),
    max_images: int | None = None,
) -> list[Record]:
    """Every image under ``root`` as unpaired records (URB-style: per-scene sub-folders, no ground truth).

    Args:
        root: the folder.
        key: the record key of the images, ``blur`` or ``sharp``.
        recursive: also search sub-folders.
        exclude: folder names to skip anywhere in the tree (e.g. ``[gt]``).
        max_images: keep this many images spread over the folder (null: all).

    Returns:
        Records with ``key`` and ``name`` = the relative path without suffix.
    """
    if key not in ("blur", "sharp"):
        raise ValueError(f"image_folder key must be 'blur' or 'sharp', got {key!r}")
    root = Path(root)
    files = list_images(root, f"{key} images, optionally in per-scene sub-folders", recursive=recursive)
    skip = set(exclude)
    records: list[Record] = [
        {key: p, "name": _name(p, root)} for p in files if not skip.intersection(p.relative_to(root).parts[:-1])
    ]
    if not records:
        raise FileNotFoundError(f"{root}: every image is inside an excluded folder {sorted(skip)}")
    return select(records, max_images)
