"""Compose ``conf/train.yaml`` outside the command line (tests, notebooks, the lab), build a run's system
and datamodule from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = [
    "CONFIG_DIR",
    "FINAL_METRICS",
    "RUN_SETTINGS",
    "backbone_node",
    "compose",
    "instantiate_datamodule",
    "instantiate_system",
]

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
#: Written into every run directory at the end of training ({"iterations": n, "metrics": {name: value}}),
#: read by ``python -m neurmap.collect``.
FINAL_METRICS = "final_metrics.json"


def _sweep_or(default: str) -> str:
    """``${neurmap_sweep:DEFAULT}``: the multirun's folder name inside a Hydra sweep, else DEFAULT (used to
    group W&B runs by sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"sweep-{Path(HydraConfig.get().sweep.dir).name}"
    return default


def _release(name: str, *default: Any) -> Any:
    """``${neurmap_release:NAME[,DEFAULT]}``: ``$NEURMAP_RELEASES/weights/NAME`` (:mod:`neurmap.releases`)."""
    from neurmap.releases import resolve_release

    return resolve_release(name, *default)


if not OmegaConf.has_resolver("neurmap_sweep"):
    OmegaConf.register_new_resolver("neurmap_sweep", _sweep_or)
if not OmegaConf.has_resolver("neurmap_release"):
    OmegaConf.register_new_resolver("neurmap_release", _release)


def _store_schemas() -> None:
    """Hydra's structured-config schemas of conf/loss and conf/variant (``defaults: [schema, _self_]`` in
    loss/paper_literal.yaml and variant/neurmap.yaml) and of the plain commands' settings (:mod:`neurmap.settings`):
    a typo'd key, a value of the wrong type or a missing one fails when the config is composed."""
    from hydra.core.config_store import ConfigStore

    from neurmap.losses.objectives import LossWeights, Variant
    from neurmap.settings import CollectSettings, DeblurSettings, ExportSettings, SynthesisSettings

    store = ConfigStore.instance()
    store.store(group="loss", name="schema", node=LossWeights)
    store.store(group="variant", name="schema", node=Variant)
    store.store(name="deblur_schema", node=DeblurSettings)
    store.store(name="export_schema", node=ExportSettings)
    store.store(name="synthesize_schema", node=SynthesisSettings)
    store.store(name="collect_schema", node=CollectSettings)


_store_schemas()


def instantiate_datamodule(cfg: DictConfig) -> Any:
    """The training datamodule of a composed run config: ``conf/data`` with the variant's loader switches
    (data configs do not read the variant; the run passes what it needs)."""
    from hydra.utils import instantiate

    return instantiate(cfg.data, use_paired=bool(cfg.variant.paired), use_unpaired=bool(cfg.variant.unpaired))


#: The run-level settings a system may take besides its ``model`` node (the model group reads no other group).
RUN_SETTINGS = ("loss", "variant", "iterations")


def instantiate_system(cfg: DictConfig) -> Any:
    """The LightningModule of a composed run config: ``cfg.model`` (each network with its optimizer) given the
    :data:`RUN_SETTINGS` its class takes (NeurMAP: all three; motion pretraining: ``iterations``)."""
    import inspect

    from hydra.utils import get_class, instantiate

    takes = inspect.signature(get_class(cfg.model._target_)).parameters
    run = {k: cfg[k] for k in RUN_SETTINGS if k in takes}
    run = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in run.items()}
    return instantiate(cfg.model, _convert_="all", **run)


def compose(overrides: list[str], output_dir: str | Path, config_name: str = "train") -> DictConfig:
    """The config ``python -m neurmap.<config_name> <overrides>`` would run, with its run directory at
    ``output_dir`` (so ``${hydra:runtime.output_dir}`` resolves). Like in a real run, the returned
    config has no ``hydra`` node."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def backbone_node(name: str) -> DictConfig:
    """``conf/backbone/<name>.yaml`` with its ``defaults`` applied (the node ``backbone=<name>`` puts at
    ``model.deblur``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not (Path(CONFIG_DIR) / "backbone" / f"{name}.yaml").is_file():
        raise FileNotFoundError(f"conf/backbone/{name}.yaml: no such backbone")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=f"backbone/{name}").model.deblur
