"""Settings composed by Hydra's compose API over the structured schemas stored in :mod:`neurmap.config`: the
same parser, the same type checks and the same unknown-key message for every command, its command line and
the library alike.

* :func:`settings`: ``conf/<config_name>.yaml`` with ``key=value`` overrides; :func:`overlay`: a mapping merged
  over composed settings with the same checks.
* :func:`check_command_line`: a Hydra app's command line checked with one composition, that of its first job
  (the first value of each ``-m`` sweep); the sweep's other values are checked against what they set, a group's
  options or the first job's node, without composing their jobs. :func:`check_overrides` composes every job.
* :func:`explain`: a composition error as one line, from the exception's type and fields (the missing config
  and its group's options, the key of the failing node, the override that did not parse), never from the
  wording of its message.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from neurmap.config import CONFIG_DIR
from neurmap.errors import UsageError, unwrap_worker_error

if TYPE_CHECKING:
    from hydra.core.config_loader import ConfigLoader
    from hydra.core.override_parser.types import Override

__all__ = [
    "check_command_line",
    "check_overrides",
    "explain",
    "group_options",
    "overlay",
    "settings",
]


@contextlib.contextmanager
def _hydra() -> Iterator[ConfigLoader]:
    """Hydra initialized on ``conf/`` (for ``compose`` and its config loader), cleared again on the way out."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            yield GlobalHydra.instance().config_loader()
    finally:
        GlobalHydra.instance().clear()


def _compose(config_name: str, overrides: Sequence[str], hydra_node: bool = False) -> DictConfig:
    from hydra import compose

    with _hydra():
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_node)


def _is_group(loader: ConfigLoader, key: str) -> bool:
    parent, _, name = key.rpartition("/")
    return name in loader.list_groups(parent)


def _options(loader: ConfigLoader, group: str) -> list[str]:
    """The options of ``group`` a command line chooses from (the structured schemas stored beside them left out)."""
    return [o for o in loader.get_group_options(group) if not o.endswith("schema")]


def group_options(groups: Sequence[str]) -> dict[str, list[str]]:
    """The options of each of ``groups`` that is a config group, as Hydra's config repository lists them."""
    with _hydra() as loader:
        return {group: _options(loader, group) for group in groups if _is_group(loader, group)}


# ------------------------------------------------------------------------------------------- messages


def _no_such_option(group: str, option: str, options: Sequence[str]) -> str:
    choices = ", ".join(o for o in options if not o.endswith("schema"))
    return f"{group}={option}: no such option; choose one of: {choices}"


def _cannot_parse(override: str) -> str:
    return (
        f"cannot parse '{override}': expected key=value or group=option (quote values with spaces, and list items "
        "holding '=': key=['a=1','b=2'])"
    )


def _keys_of(config_name: str, overrides: Sequence[str], parent: str) -> list[str]:
    """The keys of node ``parent`` (root for ``""``) composed without the overrides that touch it."""
    if not config_name:
        return []
    kept = [o for o in overrides if not o.lstrip("+~").startswith(f"{parent}.") and "=" in o] if parent else []
    try:
        cfg = _compose(config_name, kept, hydra_node=parent.startswith("hydra"))
    except Exception:  # noqa: BLE001 - only used to improve a message
        return []
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return sorted(str(k) for k in node) if isinstance(node, DictConfig) else []


def _override_key(overrides: Sequence[str], missing: str) -> str:
    """The key of the override that reaches the unknown node ``missing`` (its first unknown level), or ``missing``
    itself when no override does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for item in overrides:
        try:
            key = parser.parse_override(item).key_or_group
        except HydraException:
            continue
        if key == missing or key.startswith(f"{missing}."):
            return key
    return missing


def explain(err: BaseException, config_name: str = "", overrides: Sequence[str] = ()) -> str:
    """One line for a Hydra composition error (an unknown option lists the choices, an unknown key lists
    the known keys, a bad value names the expected type) or a DataLoader-worker error; other errors give
    their own text. ``config_name`` and ``overrides`` (the job's) let an unknown key list its node's keys."""
    from hydra.errors import (
        ConfigCompositionException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(err, MissingConfigException):
        missing = str(err.missing_cfg_file)
        group, _, option = missing.rpartition("/")
        if group:
            return _no_such_option(group, option, err.options or [])
        return f"no config named '{missing}' in conf/"
    if isinstance(err, OverrideParseException):
        return _cannot_parse(err.override)
    cause = err.__cause__ if isinstance(err, ConfigCompositionException) else err
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        key = _override_key(overrides, cause.full_key)  # the whole override key; full_key its first unknown level
        parent = cause.full_key.rpartition(".")[0]
        known = _keys_of(config_name, overrides, parent)
        where = f" of {parent}" if parent else ""
        return f"unknown key '{key}'" + (f"; the keys{where} are: {', '.join(known)}" if known else "")
    if isinstance(cause, ValidationError):
        first = str(cause).splitlines()[0]
        return f"{cause.full_key}: {first}" if cause.full_key else first
    if isinstance(err, InstantiationException) and err.__cause__ is not None:  # a constructor's own error
        return unwrap_worker_error(str(err.__cause__)).strip()
    return unwrap_worker_error(str(err)).strip() or type(err).__name__


# ------------------------------------------------------------------------------------------- command lines


def _parse(loader: ConfigLoader, overrides: Sequence[str], multirun: bool) -> list[Override]:
    """The overrides parsed by Hydra's grammar (globs listed from ``loader``); a sweep needs ``multirun``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(list(overrides))
    except OverrideParseException as err:
        raise UsageError(_cannot_parse(err.override)) from None
    for override in parsed:
        if override.is_sweep_override() and not multirun:
            raise UsageError(
                f"'{override.input_line}': a list of values sweeps only with -m; for a list write key=[a,b], "
                "for a string quote it"
            )
    return parsed


def _values(parsed: Sequence[Override]) -> list[list[str]]:
    """Each override as plain overrides: itself, or one per value of a sweep."""
    return [
        [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [str(o.input_line)]
        for o in parsed
    ]


def _check_choices(loader: ConfigLoader, parsed: Sequence[Override]) -> None:
    """Every value of a sweep over a config group is one of the group's options."""
    for override in parsed:
        group = override.key_or_group
        if override.is_sweep_override() and not override.is_delete() and _is_group(loader, group):
            options = _options(loader, group)
            for option in override.sweep_string_iterator():
                if option != "null" and option not in options:
                    raise UsageError(_no_such_option(group, option, options))


def _check_values(loader: ConfigLoader, first: DictConfig, parsed: Sequence[Override], values: list[list[str]]) -> None:
    """Every further value of a sweep over a key, set in the first job's config as Hydra sets an override: each
    pairs with the first values of the other sweeps in a job of the sweep, so a value refused here fails there."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    trial = None
    for override, lines in zip(parsed, values, strict=True):
        if override.is_delete() or override.is_hydra_override() or _is_group(loader, override.key_or_group):
            continue
        for single in OverridesParser.create().parse_overrides(lines[1:]):
            trial = trial if trial is not None else copy.deepcopy(first)
            add = single.is_add() or single.is_force_add()
            OmegaConf.update(trial, single.key_or_group, single.value(), merge=True, force_add=add)


def check_command_line(config_name: str, overrides: Sequence[str], multirun: bool) -> DictConfig | None:
    """The config (with its ``hydra`` node) of the first job of a command line, composed once, after the whole
    line is checked: every override parses, a sweep comes with ``multirun``, and every value of a sweep fits
    what it sets (one of a group's options; a key's type and known keys in the first job's config). Checks that
    need a later job's whole config are the job's own. None for a sweep of no job (a glob that matches nothing).

    Raises:
        UsageError: one line, as :func:`settings` gives.
    """
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    job = list(overrides)
    try:
        with _hydra() as loader:
            parsed = _parse(loader, overrides, multirun)
            values = _values(parsed)
            if not all(values):
                return None
            _check_choices(loader, parsed)
            job = [lines[0] for lines in values]
            cfg = compose(config_name=config_name, overrides=job, return_hydra_config=True)
            _check_values(loader, cfg, parsed, values)
    except (HydraException, OmegaConfBaseException) as err:
        raise UsageError(explain(err, config_name, job)) from None
    return cfg


def check_overrides(config_name: str, overrides: Sequence[str], multirun: bool, limit: int = 64) -> list[DictConfig]:
    """Compose every job of the command line (each combination of a ``-m`` sweep, the first ``limit``) and return
    their configs (with the ``hydra`` node); any composition error becomes one :class:`UsageError` line."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    job = list(overrides)
    configs = []
    try:
        with _hydra() as loader:
            values = _values(_parse(loader, overrides, multirun))
            for combination in itertools.islice(itertools.product(*values), limit):
                job = list(combination)
                configs.append(compose(config_name=config_name, overrides=job, return_hydra_config=True))
    except (HydraException, OmegaConfBaseException) as err:
        raise UsageError(explain(err, config_name, job)) from None
    return configs


# ------------------------------------------------------------------------------------------- settings


def _check_required(cfg: DictConfig, required: Sequence[str]) -> None:
    for key in required:
        try:
            OmegaConf.select(cfg, key, throw_on_missing=True)
        except MissingMandatoryValue:
            raise UsageError(f"{key}=... is required") from None


def settings(config_name: str, overrides: Sequence[str] = (), required: Sequence[str] = ()) -> DictConfig:
    """``conf/<config_name>.yaml`` composed with the ``key=value`` overrides over its schema.

    Raises:
        UsageError: a malformed override, an unknown key or option (the known ones are listed), a value of
            the wrong type, or a ``required`` key left at ``???``.
    """
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise UsageError(f"'{item}' is not key=value (the settings: {', '.join(_keys_of(config_name, (), ''))})")
    try:
        with _hydra() as loader:
            _parse(loader, overrides, multirun=False)
            cfg = compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise UsageError(explain(err, config_name, overrides)) from None
    _check_required(cfg, required)
    return cfg


def overlay(base: DictConfig, layer: object, origin: str) -> DictConfig:
    """``layer`` (a mapping or config) merged over the composed settings ``base``, with the same unknown-key
    and type checks as the command line; ``origin`` names the layer in messages."""
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    try:
        return OmegaConf.merge(
            base, OmegaConf.create(OmegaConf.to_container(layer) if OmegaConf.is_config(layer) else layer)
        )
    except ConfigKeyError as err:
        key = str(getattr(err, "full_key", "") or str(err).splitlines()[0])
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(base, parent) if parent else base
        known = ", ".join(sorted(str(k) for k in node)) if isinstance(node, DictConfig) else ""
        raise UsageError(
            f"unknown key '{key}' in {origin}; the keys{f' of {parent}' if parent else ''} are: {known}"
        ) from None
    except OmegaConfBaseException as err:
        raise UsageError(f"{getattr(err, 'full_key', '') or origin}: {str(err).splitlines()[0]}") from None
