"""The command-line habit every ``neurmap`` command shares.

* Settings are ``key=value`` overrides of a config in ``conf/``, composed by Hydra's compose API over the
  structured schemas stored in :mod:`neurmap.config` (:func:`settings`): the same parser, the same type
  checks and the same unknown-key message for every command. train and evaluate are Hydra apps (``-m``
  sweeps, launchers) and get the same checks before Hydra starts (:func:`hydra_command`).
* One error type, :class:`UsageError`, whose message is one line naming the file, key or value and what was
  expected. :func:`explain` shortens Hydra's composition errors and DataLoader-worker errors to that line.
* Exit status: 0 success, 1 a run that failed or was stopped (a crash, a failed export check, images that
  could not be read, Ctrl+C or SIGTERM: :func:`stoppable` makes them alike), 2 a usage or configuration error.
  ``HYDRA_FULL_ERROR=1`` shows the full traceback of any error.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from neurmap.config import CONFIG_DIR, FINAL_METRICS
from neurmap.utils.quiet import quiet_known_noise

__all__ = [
    "Stopped",
    "UsageError",
    "check_not_finished",
    "check_not_stopped",
    "discard_run_dir",
    "explain",
    "fail",
    "hydra_command",
    "overlay",
    "parser",
    "resolve_device",
    "settings",
    "stoppable",
]


class UsageError(ValueError):
    """A bad setting, override, path or value: the one error type of every command. The message is one line
    naming the key, file or value, what was expected and, where there is one, the fix."""


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl+C would raise KeyboardInterrupt, so that both stop a command alike."""


def _raise_stopped(signum: int, frame: object) -> None:
    if signal.getsignal(signum) is _raise_stopped:  # else a handler that calls it (Lightning's) stops the run itself
        raise Stopped(signal.Signals(signum).name)


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Within it, SIGTERM raises :class:`Stopped` (a KeyboardInterrupt) in the main thread, as Ctrl+C does; while
    another handler has taken SIGTERM over and calls this one (Lightning's, during fit and test, which stops at the
    next batch), it leaves the stop to that handler."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_message(err: KeyboardInterrupt, resume: str) -> str:
    """The one line of a command stopped by Ctrl+C or SIGTERM; ``resume`` says how to go on."""
    how = "SIGTERM" if isinstance(err, Stopped) else "Ctrl+C"
    return f"stopped by {how}; {resume}"


def without_unsafe_advice(text: str) -> str:
    """``text`` with torch's advice to re-run ``torch.load`` with ``weights_only=False`` (which runs whatever code
    a file holds) replaced by what it means: the file holds more than plain tensors."""
    start = text.find("Weights only load failed")
    if start < 0:
        return text
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|Check the documentation|$)", text[start:], re.S)
    reason = f": {' '.join(detail.group(1).split())}" if detail else ""
    return (
        f"{text[:start]}not a file of plain tensors{reason} (neurmap reads weights only, never pickled objects; "
        "check that the path names the checkpoint you meant)"
    )


def fail(prog: str, message: object, status: int = 2) -> int:
    """Print ``<prog>: error: <message>`` (one line) on stderr and return ``status``."""
    print(f"{prog}: error: {' '.join(without_unsafe_advice(str(message)).split())}", file=sys.stderr, flush=True)
    return status


def unwrap_worker_error(message: str) -> str:
    """The original message of an error re-raised from a DataLoader worker (torch wraps it in
    ``Caught <Error> in DataLoader worker process N. Original Traceback ...``); other messages unchanged."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    return re.sub(r"^[\w.]+(Error|Exception): ", "", last.strip())


# ------------------------------------------------------------------------------------------- composition


def _compose(config_name: str, overrides: Sequence[str], hydra_node: bool = False) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_node)
    finally:
        GlobalHydra.instance().clear()


def _keys_of(config_name: str, overrides: Sequence[str], parent: str) -> list[str]:
    """The keys of node ``parent`` (root for ``""``) composed without the overrides that touch it."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(f"{parent}.") and "=" in o] if parent else []
    try:
        cfg = _compose(config_name, kept, hydra_node=parent.startswith("hydra"))
    except Exception:  # noqa: BLE001 - only used to improve a message
        return []
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return sorted(str(k) for k in node) if isinstance(node, DictConfig) else []


def explain(err: BaseException, config_name: str = "", overrides: Sequence[str] = ()) -> str:
    """One line for a Hydra composition error (an unknown option lists the choices, an unknown key lists
    the known keys, a bad value names the expected type) or a DataLoader-worker error; other errors give
    their own first line."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    text = unwrap_worker_error(str(err)).strip()
    if isinstance(err, MissingConfigException):
        found = re.search(r"Could not find '([^']+)'", text)
        missing = found.group(1) if found else str(err.missing_cfg_file)
        group, _, option = missing.rpartition("/")
        choices = ", ".join(o for o in err.options or [] if not o.endswith("schema"))
        if group:
            return f"{group}={option}: no such option; choose one of: {choices}"
        return f"no config named '{missing}' in conf/"
    if isinstance(err, OverrideParseException):
        found = re.search(r"override '([^']*)'", text) or re.search(r": (.*)$", text.splitlines()[0])
        shown = found.group(1) if found else text.splitlines()[0]
        return (
            f"cannot parse '{shown}': expected key=value or group=option (quote values with spaces, and list items "
            "holding '=': key=['a=1','b=2'])"
        )
    cause = err.__cause__
    if isinstance(err, ConfigCompositionException) and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        found = re.search(r"Could not override '([^']+)'", text)
        missing = getattr(cause, "full_key", None) or (found.group(1) if found else "")
        key = found.group(1) if found else missing  # the whole override key; ``missing`` its first unknown level
        parent = missing.rpartition(".")[0]
        known = _keys_of(config_name, overrides, parent)
        where = f" of {parent}" if parent else ""
        return f"unknown key '{key}'" + (f"; the keys{where} are: {', '.join(known)}" if known else "")
    if isinstance(err, ConfigCompositionException) and isinstance(cause, ValidationError):
        key = getattr(cause, "full_key", "") or ""
        first = str(cause).splitlines()[0]
        return f"{key}: {first}" if key else first
    if isinstance(err, ConfigCompositionException) and text.startswith("Ambiguous value"):
        value = re.search(r"'([^']+)'", text)
        return (
            f"'{value.group(1) if value else text}': a list of values sweeps only with -m; "
            "for a list write key=[a,b], for a string quote it"
        )
    if type(err).__name__ == "InstantiationException" and cause is not None:  # a constructor's own error
        where = re.search(r"full_key: (\S+)", text)
        return f"{where.group(1) + ': ' if where else ''}{unwrap_worker_error(str(cause)).strip()}"
    return text or type(err).__name__


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
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise UsageError(f"'{item}' is not key=value (the settings: {', '.join(_keys_of(config_name, (), ''))})")
    try:
        cfg = _compose(config_name, overrides)
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


# ------------------------------------------------------------------------------------------- Hydra apps


def _sweep_combinations(overrides: Sequence[str], limit: int = 64) -> list[list[str]]:
    """The jobs a ``-m`` sweep would run (the first ``limit``), each as a list of plain overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    axes = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(combo) for combo in itertools.islice(itertools.product(*axes), limit)]


def check_overrides(config_name: str, overrides: Sequence[str], multirun: bool) -> list[DictConfig]:
    """Compose every job of the command line (each combination of a ``-m`` sweep) and return their configs
    (with the ``hydra`` node); any composition error becomes one :class:`UsageError` line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        jobs = _sweep_combinations(overrides) if multirun else [list(overrides)]
        return [_compose(config_name, job, hydra_node=True) for job in jobs]
    except (HydraException, OmegaConfBaseException) as err:
        raise UsageError(explain(err, config_name, overrides)) from None


def _groups(config_name: str) -> list[tuple[str, str]]:
    """(group, default option) of the primary config's defaults list."""
    defaults = OmegaConf.load(Path(CONFIG_DIR) / f"{config_name}.yaml").get("defaults", [])
    pairs = []
    for entry in defaults:
        if isinstance(entry, DictConfig):
            for key, value in entry.items():
                group = str(key).replace("optional ", "").replace("override ", "")
                if group != "hydra" and (Path(CONFIG_DIR) / group).is_dir():
                    pairs.append((group, str(value)))
    return pairs


def _what_then_usage(doc: str | None, usage: str) -> str:
    """A command's help head: the first paragraph of its docstring (what it does), its usage line, the rest."""
    first, _, rest = (doc or "").strip().partition("\n\n")
    return "\n\n".join(part for part in (first, f"usage: {usage}", rest) if part)


def help_text(prog: str, config_name: str, doc: str, usage: str) -> str:
    """``--help`` of a Hydra app: what it does, its usage, its config groups with their options, its
    settings file; then the flags (the plain commands' help has the same shape, :func:`parser`)."""
    lines = [_what_then_usage(doc, usage), "", *_groups_text(config_name)]
    body = (Path(CONFIG_DIR) / f"{config_name}.yaml").read_text()
    lines += [f"settings (conf/{config_name}.yaml; key=value, dotted keys reach into the groups):", body]
    lines += [
        "--cfg job prints the composed settings without running the command. Add -m to sweep comma-separated",
        "values (one job each); --hydra-help shows Hydra's own flags; HYDRA_FULL_ERROR=1 shows full tracebacks.",
    ]
    return "\n".join(lines)


#: Whether the run (or sweep) folder of the command in progress is new: a usage error then removes it
#: (:func:`discard_run_dir`), so that no empty run folder is left behind.
_FRESH = {"run": False, "sweep": False}


def discard_run_dir() -> None:
    """Remove the folder Hydra made for a job that ends in a usage error, when it holds nothing but what Hydra
    wrote there (``.hydra/``, the job's log) and did not exist before the command; a sweep folder left with no
    job goes too."""
    import shutil

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if not _FRESH["sweep" if multirun else "run"]:
        return
    run_dir = Path(hydra_cfg.runtime.output_dir)
    hydra_only = {".hydra", f"{hydra_cfg.job.name}.log"}
    if run_dir.is_dir() and all(p.name in hydra_only or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
    sweep = Path(hydra_cfg.sweep.dir)
    if multirun and sweep.is_dir() and all(p.name == "multirun.yaml" for p in sweep.iterdir()):
        shutil.rmtree(sweep, ignore_errors=True)


def hydra_command(prog: str, config_name: str, doc: str, usage: str, app: Callable[[], object]) -> Callable:
    """The entry point of a Hydra app (``app``: the ``@hydra.main`` function): ``--help`` of its own, and
    every job's composition checked before Hydra starts, so that a bad override is one line and exit 2. Returns
    the exit status (a job's ``sys.exit(n)`` becomes ``n``)."""

    def main(argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        if any(a in ("-h", "--help") for a in args):
            print(help_text(prog, config_name, doc, usage))
            return 0
        hydra_flags = any(a.startswith("-") and a not in ("-m", "--multirun") for a in args)
        _FRESH.update(run=False, sweep=False)
        quiet_known_noise()
        if not hydra_flags:
            multirun = "-m" in args or "--multirun" in args
            try:
                configs = check_overrides(config_name, [a for a in args if not a.startswith("-")], multirun)
            except UsageError as err:
                if os.environ.get("HYDRA_FULL_ERROR") != "1":
                    return fail(prog, err)
                configs = []  # Hydra reports the same error with its full traceback
            try:
                if configs and not multirun:
                    _check_run_dir(configs[0])  # never bypassed: it keeps a finished run's records
                elif configs:
                    _check_sweep_dir(configs[0])
            except UsageError as err:
                return fail(prog, err)
        sys.argv = [sys.argv[0], *args]
        try:
            app()
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else (0 if done.code is None else fail(prog, done.code, 1))
        return 0

    return main


def check_not_finished(output_dir: Path, key: str = "paths.output_dir") -> None:
    """A run never writes into a finished run's folder (its ``final_metrics.json`` and records would be
    replaced): one line that says how to go on from it instead."""
    if (output_dir / FINAL_METRICS).is_file():
        ckpt = output_dir / "checkpoints" / "last.ckpt"
        raise UsageError(
            f"{key}={output_dir} holds a finished run ({FINAL_METRICS}); a new or resumed run writes its own folder: "
            f"leave {key} out, and to go on from it pass model.deblur.pretrained={ckpt}"
        )


def check_not_stopped(output_dir: Path, ckpt_path: object, key: str = "paths.output_dir") -> None:
    """A new run (no ``ckpt_path``) never starts over in the folder of a stopped one, whose checkpoints it would
    replace: one line that says ``ckpt_path=last``."""
    if ckpt_path not in (None, ""):
        return
    folder = output_dir / "checkpoints"
    found = [name for name in ("interrupted.ckpt", "last.ckpt") if (folder / name).is_file()]
    if found:
        raise UsageError(
            f"{key}={output_dir} holds a stopped run (checkpoints/{found[0]}); resume it with ckpt_path=last, "
            f"or leave {key} out for a new run"
        )


def _check_run_dir(cfg: DictConfig) -> None:
    """Before Hydra writes its ``.hydra`` records: refuse a run folder that holds a finished run or (train) a
    stopped one without ``ckpt_path``, or that cannot be written."""
    from neurmap.utils.records import check_writable

    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    if run_dir is not None:
        check_not_finished(Path(str(run_dir)), key="hydra.run.dir")
        if "ckpt_path" in cfg:
            check_not_stopped(Path(str(run_dir)), cfg.ckpt_path, key="hydra.run.dir")
        check_writable(Path(str(run_dir)), "hydra.run.dir")
        _FRESH["run"] = not Path(str(run_dir)).exists()


def _check_sweep_dir(cfg: DictConfig) -> None:
    """Before Hydra writes a sweep: its folder must be writable."""
    from neurmap.utils.records import check_writable

    sweep_dir = OmegaConf.select(cfg, "hydra.sweep.dir")
    if sweep_dir is not None:
        check_writable(Path(str(sweep_dir)), "hydra.sweep.dir")
        _FRESH["sweep"] = not Path(str(sweep_dir)).exists()


# --------------------------------------------------------------------------------------- plain commands


class _Parser(argparse.ArgumentParser):
    """argparse with ``--cfg job``: print the settings composed from ``conf/<config_name>.yaml`` and the
    ``key=value`` arguments, and exit 0 without running the command (as the Hydra apps do)."""

    config_name = ""

    def parse_args(self, args: Sequence[str] | None = None, namespace: object = None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        if "--cfg" in argv and not any(a in ("-h", "--help") for a in argv):
            at = argv.index("--cfg")
            if argv[at + 1 : at + 2] != ["job"]:
                self.error("--cfg takes one value, job (print the composed settings)")
            overrides = [a for a in argv[:at] + argv[at + 2 :] if "=" in a and not a.startswith("-")]
            try:
                cfg = settings(self.config_name, overrides)
            except UsageError as err:
                sys.exit(fail(self.prog, err))
            print(OmegaConf.to_yaml(cfg), end="")
            sys.exit(0)
        return super().parse_args(argv, namespace)  # type: ignore[arg-type]


def _groups_text(config_name: str) -> list[str]:
    """The ``config groups`` section of a help: each group of the defaults list with its options."""
    pairs = _groups(config_name)
    if not pairs:
        return []
    lines = ["config groups (group=option; conf/<group>/):"]
    for group, default in pairs:
        options = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
        lines.append(f"  {group:10s} {', '.join(options)}  (default: {default.replace('None', 'none')})")
    return [*lines, ""]


def parser(prog: str, usage: str, description: str, config_name: str) -> argparse.ArgumentParser:
    """An argument parser for positionals plus ``key=value`` settings; its help has the Hydra apps' shape
    (:func:`help_text`): what the command does, its usage, its config groups, the commented settings file
    ``conf/<config_name>.yaml``, and the flags every command takes (``--cfg job``)."""
    text = (Path(CONFIG_DIR) / f"{config_name}.yaml").read_text()
    epilog = [
        *_groups_text(config_name),
        f"settings (conf/{config_name}.yaml; key=value, dotted keys reach into the groups):",
        text,
        "--cfg job prints the composed settings without running the command.",
    ]
    cli = _Parser(
        prog=prog,
        usage=argparse.SUPPRESS,  # the help starts with what the command does, then its usage line
        description=_what_then_usage(description, usage),
        epilog="\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.config_name = config_name
    cli.error = lambda message: sys.exit(fail(prog, f"{message} (usage: {usage})"))  # type: ignore[method-assign]
    return cli


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if available, else CPU) or a torch device name; CUDA without a GPU is a UsageError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device={name}: not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name}: CUDA is not available on this machine (use device=cpu or auto)")
    return device
