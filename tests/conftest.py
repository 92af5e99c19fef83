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

import functools  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

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


def _package(group: str, option: str | None, explicit: str | None) -> str | None:
    """Where ``group=option`` puts its node: ``group@<explicit>``, else the option file's ``# @package`` header,
    else the group's path (Hydra's default); None for the root (``_global_``: a preset over the whole config)."""
    package = explicit
    path = CONF / group / f"{option}.yaml"
    if package is None and option is not None and path.is_file():
        header = [line for line in path.read_text().splitlines()[:3] if line.startswith("# @package ")]
        package = header[0].split()[-1] if header else None
    package = (package or "_group_").replace("_group_", group.replace("/", "."))
    return None if package == "_global_" else package.removeprefix("_global_.")


@functools.cache
def _composed(extra: tuple[str, ...]) -> Any:
    """conf/train.yaml composed with ``extra`` alone and its Hydra node (the group choices), or None when that
    fails (a sweep value, a bad override: the command under test reports it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="train", overrides=list(extra), return_hydra_config=True)
    except Exception:  # any composition error: no layout to read
        return None
    finally:
        GlobalHydra.instance().clear()


def tiny_overrides(*extra: str) -> list[str]:
    """TINY plus ``extra``, fitted to the config ``extra`` composes: a TINY group choice stays while its group is
    in use and ``extra`` does not choose it; a TINY setting stays while its key exists there and is not inside a
    group ``extra`` chooses (``backbone=dmphn`` drops TINY's D settings; ``variant=motion_pretrain``, M alone,
    drops D's and the discriminator's); a key ``extra`` sets itself is not set twice."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    theirs = parser.parse_overrides(list(extra))
    keys = {o.key_or_group for o in theirs}
    mine = parser.parse_overrides(TINY)
    groups = [o for o in mine if (CONF / o.key_or_group).is_dir() and o.key_or_group not in keys]
    chosen = [o for o in theirs if (CONF / o.key_or_group).is_dir()]
    packages = [_package(o.key_or_group, None if o.is_delete() else o.value(), o.package) for o in chosen]
    inside = tuple(f"{p}." for p in packages if p)
    cfg = _composed(tuple(extra))
    choices = {} if cfg is None else cfg.hydra.runtime.choices
    # TINY's own option of a group in use where extra composes another: its settings are not in cfg, and stay
    others = [o for o in groups if choices.get(o.key_or_group) not in (None, o.value())]
    own = tuple(f"{p}." for p in (_package(o.key_or_group, o.value(), o.package) for o in others) if p)
    missing = object()

    def kept(override: Any) -> bool:
        key = override.key_or_group
        if key in keys or key.startswith(inside):
            return False
        if cfg is None:
            return True
        if override in groups:
            return choices.get(key) is not None  # a group that extra's presets removed takes no choice
        return key.startswith(own) or OmegaConf.select(cfg, key, default=missing) is not missing

    return [o.input_line for o in mine if kept(o)] + list(extra)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked slow run first (in their usual order): under xdist's work stealing the long ones then
    start early and the short ones fill the other worker's time, instead of one long test ending the suite."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
