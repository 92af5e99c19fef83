"""Shared fixtures: offline environment, and Hydra configs composed for tiny CPU runs."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# Under pytest-xdist (``-n N``) the cores are shared among the workers: every torch, this process's and those of
# the commands the tests start, gets its share. A process with more threads than free cores waits at every op's
# thread barrier while another holds a core (steps 10-40x slower were measured on 2 cores).
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from neurmap.config import compose  # noqa: E402, F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
#: The authors' released weights and published outputs (``weights/<name>/``, ``fixtures/dmphn_gopro/``) come
#: from the folder NEURMAP_RELEASES names; the tests that need them skip without it. They are never committed.
RELEASES = Path(os.environ["NEURMAP_RELEASES"]) if os.environ.get("NEURMAP_RELEASES") else None


def released(*parts: str) -> Path | None:
    """``$NEURMAP_RELEASES/<parts>`` if the variable is set and the path exists, else None."""
    path = RELEASES.joinpath(*parts) if RELEASES is not None else None
    return path if path is not None and path.exists() else None


# Overrides that shrink every part of a run so one iteration takes well under a second on CPU.
TINY = [
    "backbone=unet",
    "model.deblur.net.width=8",
    "model.motion.net.width=8",
    "model.disc.net.width=8",
    "model.disc.net.n_layers=2",
    "data=builtin",
    "data.batch_size_paired=2",
    "data.batch_size_unpaired=2",
    "data.paired.num_images=8",
    "data.unpaired_blur.num_images=8",
    "data.unpaired_sharp.num_images=8",
    "data.val.builtin_camera.num_images=2",
    "data.test.builtin_camera.num_images=2",
    "logger=none",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "iterations=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
]


#: Where a group's option lands when it is not at the group's own name (``# @package`` header).
PACKAGES = {"backbone": "model.deblur"}


def tiny_overrides(*extra: str) -> list[str]:
    """TINY plus ``extra``; a group chosen or removed in ``extra`` (``backbone=dmphn``, ``~backbone``) drops TINY's
    settings of it."""
    groups = [e.split("=", 1)[0].lstrip("~") for e in extra if "=" in e or e.startswith("~")]
    chosen = {g for g in groups if "." not in g}
    dropped = tuple(f"{g}=" for g in chosen) + tuple(f"{PACKAGES.get(g, g)}." for g in chosen)
    kept = [t for t in TINY if not t.startswith(dropped)]
    if {"variant=motion_pretrain", "experiment=mini_motion"} & set(extra):  # M alone: no D, no discriminator
        kept = [t for t in kept if not t.startswith(("backbone=", "model.deblur.", "model.disc."))]
    return kept + list(extra)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory):
    """A NEURMAP_DATA folder holding a tiny fake tree of every documented layout (tests/fake_data.py)."""
    from tests import fake_data

    root = tmp_path_factory.mktemp("fake_data")
    fake_data.all_layouts(root)
    return root


@pytest.fixture
def tiny_cfg(tmp_path):
    """A composed tiny config factory: tiny_cfg(*extra_overrides)."""

    def make(*extra: str):
        return compose(tiny_overrides(*extra), tmp_path / "run")

    make.tmp_path = tmp_path
    return make
