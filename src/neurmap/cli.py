"""The command-line habit every ``neurmap`` command shares.

* Settings are ``key=value`` overrides of a config in ``conf/``, composed by :mod:`neurmap.composition`
  (:func:`settings`): the same parser, the same type checks and the same unknown-key message for every
  command. train and evaluate are Hydra apps (``-m`` sweeps, launchers) whose command line is checked before
  Hydra starts (:func:`hydra_command`).
* One error type, :class:`~neurmap.errors.UsageError`, whose message is one line naming the file, key or value
  and what was expected; :func:`fail` prints it.
* Exit status: 0 success, 1 a run that failed or was stopped (a crash, a failed export check, images that
  could not be read, Ctrl+C or SIGTERM: :func:`stoppable` makes them alike), 2 a usage or configuration error.
  ``HYDRA_FULL_ERROR=1`` shows the full traceback of any error (:func:`full_error`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from neurmap.composition import check_command_line, check_overrides, explain, group_options, overlay, settings
from neurmap.config import CONFIG_DIR
from neurmap.errors import Stopped, UsageError, stoppable, without_unsafe_advice
from neurmap.utils.device import resolve_device
from neurmap.utils.quiet import quiet_known_noise
from neurmap.utils.records import check_not_finished, check_not_stopped, check_writable

__all__ = [
    "Stopped",
    "UsageError",
    "check_not_finished",
    "check_not_stopped",
    "check_overrides",
    "discard_run_dir",
    "explain",
    "fail",
    "full_error",
    "hydra_command",
    "literal",
    "overlay",
    "plain_command",
    "resolve_device",
    "settings",
    "stoppable",
]


def stop_message(err: KeyboardInterrupt, resume: str) -> str:
    """The one line of a command stopped by Ctrl+C or SIGTERM; ``resume`` says how to go on."""
    how = "SIGTERM" if isinstance(err, Stopped) else "Ctrl+C"
    return f"stopped by {how}; {resume}"


def fail(prog: str, message: object, status: int = 2) -> int:
    """Print ``<prog>: error: <message>`` (one line) on stderr and return ``status``."""
    print(f"{prog}: error: {' '.join(without_unsafe_advice(str(message)).split())}", file=sys.stderr, flush=True)
    return status


# ------------------------------------------------------------------------------------------- Hydra apps


def _groups(config_name: str) -> list[tuple[str, str, list[str]]]:
    """(group, default option, options) of each config group in the primary config's defaults list."""
    defaults = OmegaConf.load(Path(CONFIG_DIR) / f"{config_name}.yaml").get("defaults", [])
    pairs = [
        (str(key).replace("optional ", "").replace("override ", ""), str(value))
        for entry in defaults
        if isinstance(entry, DictConfig)
        for key, value in entry.items()
    ]
    options = group_options([group for group, _ in pairs if group != "hydra"])
    return [(group, default, options[group]) for group, default in pairs if group in options]


def _what_then_usage(doc: str | None, usage: str) -> str:
    """A command's help head: the first paragraph of its docstring (what it does), its usage line, the rest."""
    first, _, rest = (doc or "").strip().partition("\n\n")
    return "\n\n".join(part for part in (first, f"usage: {usage}", rest) if part)


def _groups_text(config_name: str) -> list[str]:
    """The ``config groups`` section of a help: each group of the defaults list with its options."""
    groups = _groups(config_name)
    if not groups:
        return []
    lines = ["config groups (group=option; conf/<group>/):"]
    for group, default, options in groups:
        lines.append(f"  {group:10s} {', '.join(options)}  (default: {default.replace('None', 'none')})")
    return [*lines, ""]


def help_text(prog: str, config_name: str, doc: str, usage: str, sweeps: bool = True) -> str:
    """``--help`` of a command: what it does, its usage, its config groups with their options, its settings
    file; then the flags (``sweeps``: the Hydra apps' ``-m`` and Hydra's own)."""
    lines = [_what_then_usage(doc, usage), "", *_groups_text(config_name)]
    body = (Path(CONFIG_DIR) / f"{config_name}.yaml").read_text()
    lines += [f"settings (conf/{config_name}.yaml; key=value, dotted keys reach into the groups):", body]
    lines.append("--cfg job prints the composed settings without running the command.")
    if sweeps:
        lines += [
            "Add -m to sweep comma-separated values (one job each); --hydra-help shows Hydra's own flags;",
            "HYDRA_FULL_ERROR=1 shows full tracebacks.",
        ]
    return "\n".join(lines)


#: Whether the run (or sweep) folder of the command in progress is new: a usage error then removes it
#: (:func:`discard_run_dir`), so that no empty run folder is left behind.
_FRESH = {"run": False, "sweep": False}


def discard_run_dir(hydra_cfg: DictConfig | None = None) -> None:
    """Remove the folder Hydra made for a job that ends in a usage error, when it holds nothing but what Hydra
    wrote there (``.hydra/``, the job's log) and did not exist before the command; a sweep folder left with no
    job goes too. ``hydra_cfg``: the ``hydra`` node of the job or sweep (default: that of the job in progress)."""
    import shutil

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if hydra_cfg is None:
        if not HydraConfig.initialized():
            return
        hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if not _FRESH["sweep" if multirun else "run"]:
        return
    output_dir = OmegaConf.select(hydra_cfg, "runtime.output_dir")  # None: a sweep none of whose jobs started
    run_dir = Path(str(output_dir)) if output_dir is not None else None
    hydra_only = {".hydra", f"{hydra_cfg.job.name}.log"}
    if (
        run_dir is not None
        and run_dir.is_dir()
        and all(p.name in hydra_only or p.suffix == ".log" for p in run_dir.iterdir())
    ):
        shutil.rmtree(run_dir, ignore_errors=True)
    sweep = Path(hydra_cfg.sweep.dir)
    if multirun and sweep.is_dir() and all(p.name == "multirun.yaml" for p in sweep.iterdir()):
        shutil.rmtree(sweep, ignore_errors=True)


#: The user's own ``HYDRA_FULL_ERROR``, kept while :func:`hydra_command` sets it for Hydra; the jobs' processes
#: (a joblib worker, a DDP rank started as a new command) inherit both.
_USER_FULL_ERROR = "NEURMAP_USER_FULL_ERROR"


def full_error() -> bool:
    """Whether the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``), also while a Hydra app runs with
    Hydra told to raise its errors (:func:`hydra_command`)."""
    return os.environ.get(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR")) == "1"


@contextlib.contextmanager
def _hydra_raises() -> Iterator[None]:
    """Hydra raises its errors instead of printing them and exiting 1 (``HYDRA_FULL_ERROR=1``, the one switch
    Hydra has), so that :func:`hydra_command` reports a composition error as the usage error it is; the user's
    own choice stays what :func:`full_error` says, and both variables are restored on the way out."""
    saved = {name: os.environ.get(name) for name in ("HYDRA_FULL_ERROR", _USER_FULL_ERROR)}
    os.environ[_USER_FULL_ERROR] = "1" if full_error() else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _sweep_job(err: BaseException) -> tuple[DictConfig | None, list[str]]:
    """The sweep's config and the overrides of the sweep job whose composition raised ``err``: the arguments of
    Hydra's ``ConfigLoader.load_sweep_config(master_config, sweep_overrides)`` on its traceback; (None, []) for
    an error outside a sweep job's composition."""
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "load_sweep_config" and "sweep_overrides" in frame.f_locals:
            return frame.f_locals.get("master_config"), [str(o) for o in frame.f_locals["sweep_overrides"]]
        tb = tb.tb_next
    return None, []


def _not_composed(prog: str, config_name: str, err: BaseException) -> int:
    """A composition error Hydra raised (a job of a sweep that only a later swept value breaks, or any error
    when the checks before Hydra were skipped): one line naming the job, its sweep folder removed if it holds
    no job; status 2."""
    if full_error():
        traceback.print_exception(err)  # the full traceback, and still the status of a usage error
    sweep, job = _sweep_job(err)
    if sweep is not None:
        discard_run_dir(sweep.hydra)  # a sweep folder with finished jobs is kept
    return fail(prog, (f"job {' '.join(job)}: " if job else "") + explain(err, config_name, job))


def hydra_command(prog: str, config_name: str, doc: str, usage: str, app: Callable[[], object]) -> Callable:
    """The entry point of a Hydra app (``app``: the ``@hydra.main`` function): ``--help`` of its own, and the
    command line checked before Hydra starts (:func:`~neurmap.composition.check_command_line`: the first job
    composed, every value of a sweep checked), so that a bad override is one line and exit 2; a later job of a
    sweep that Hydra cannot compose is one line and exit 2 too (:func:`_not_composed`). Returns the exit status
    (a job's ``sys.exit(n)`` becomes ``n``; a crash prints its traceback and gives 1, or with
    ``HYDRA_FULL_ERROR=1`` propagates)."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

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
                first = check_command_line(config_name, [a for a in args if not a.startswith("-")], multirun)
            except UsageError as err:
                if not full_error():
                    return fail(prog, err)
                first = None  # Hydra raises the same error: its full traceback, then the line (_not_composed)
            try:
                if first is not None and not multirun:
                    _check_run_dir(first)  # never bypassed: it keeps a finished run's records
                elif first is not None:
                    _check_sweep_dir(first)
            except UsageError as err:
                return fail(prog, err)
        sys.argv = [sys.argv[0], *args]
        try:
            with _hydra_raises():
                app()
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else (0 if done.code is None else fail(prog, done.code, 1))
        except (ConfigCompositionException, OverrideParseException) as err:  # composing wraps OmegaConf's errors
            return _not_composed(prog, config_name, err)
        except Exception:  # a crash: its traceback and status 1 as Hydra gave them; with HYDRA_FULL_ERROR=1 raised
            if full_error():
                raise
            traceback.print_exc()
            return 1
        return 0

    return main


def _check_run_dir(cfg: DictConfig) -> None:
    """Before Hydra writes its ``.hydra`` records: refuse a run folder that holds a finished run or (train) a
    stopped one without ``ckpt_path``, or that cannot be written."""
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    if run_dir is not None:
        check_not_finished(Path(str(run_dir)), key="hydra.run.dir")
        if "ckpt_path" in cfg:
            check_not_stopped(Path(str(run_dir)), cfg.ckpt_path, key="hydra.run.dir")
        check_writable(Path(str(run_dir)), "hydra.run.dir")
        _FRESH["run"] = not Path(str(run_dir)).exists()


def _check_sweep_dir(cfg: DictConfig) -> None:
    """Before Hydra writes a sweep: its folder must be writable."""
    sweep_dir = OmegaConf.select(cfg, "hydra.sweep.dir")
    if sweep_dir is not None:
        check_writable(Path(str(sweep_dir)), "hydra.sweep.dir")
        _FRESH["sweep"] = not Path(str(sweep_dir)).exists()


# --------------------------------------------------------------------------------------- plain commands


def literal(override: str) -> str:
    """``key=value`` with the value taken as it is written when Hydra's override grammar cannot read it as one
    value (a file name with ``(``, ``#``, ``'``, ``=``, a comma or a non-ASCII letter) or would read it as an
    interpolation (``${...}``: variables are the shell's to expand): the value is then quoted, so a plain command
    takes any file name without more quoting than the shell's. Values the grammar reads (numbers, ``null``,
    ``release:<name>``) and values written as a list or mapping (``[...]``, ``{...}``) are left alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    key, sep, value = override.partition("=")
    if not sep or not key.strip() or value[:1] + value[-1:] in ("[]", "{}"):
        return override  # not key=value, or a list or mapping: Hydra's grammar (and its message) is the one
    try:
        if "${" not in value and not OverridesParser.create().parse_override(override).is_sweep_override():
            return override
    except HydraException:
        pass
    # in Hydra's quoted strings a backslash escapes only a quote (or backslashes before one); ${ is interpolation
    quoted = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    quoted = quoted.replace("${", "\\${")
    return f"{key}='{quoted}'"


def plain_command(
    prog: str,
    config_name: str,
    doc: str,
    usage: str,
    run: Callable[[DictConfig], int],
    required: Sequence[str] = (),
    paths: Sequence[str] = (),
) -> Callable[[Sequence[str] | None], int]:
    """The entry point of a plain command: its arguments are ``key=value`` settings of ``conf/<config_name>.yaml``
    (:func:`~neurmap.composition.settings`, values read by :func:`literal`), with ``--help`` (:func:`help_text`)
    and ``--cfg job`` (print the composed settings and stop) as the Hydra apps have. ``run`` gets the composed
    settings and returns the exit status; a bad argument is one line and exit 2. ``required``: keys that must be
    set; ``paths``: the keys a bare argument most likely meant, in order (named in the message that refuses it)."""

    def main(argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        if any(a in ("-h", "--help") for a in args):
            print(help_text(prog, config_name, doc, usage, sweeps=False))
            return 0
        show = "--cfg" in args
        if show:
            at = args.index("--cfg")
            if args[at + 1 : at + 2] != ["job"]:
                return fail(prog, f"--cfg takes one value, job (print the composed settings) (usage: {usage})")
            del args[at : at + 2]
        bare = [a for a in args if "=" not in a]
        for arg in args:
            if arg.startswith("-"):
                return fail(prog, f"unknown flag {arg}: the flags are --help and --cfg job (usage: {usage})")
            if "=" not in arg:
                unset = [k for k in paths if not any(a.startswith(f"{k}=") for a in args)]
                key = unset[bare.index(arg)] if bare.index(arg) < len(unset) else "key"
                return fail(prog, f"'{arg}' is not key=value: write {key}={arg} (usage: {usage})")
        quiet_known_noise()
        try:
            cfg = settings(config_name, [literal(a) for a in args], required=() if show else required)
        except UsageError as err:
            return fail(prog, err)
        if show:
            print(OmegaConf.to_yaml(cfg), end="")
            return 0
        return run(cfg)

    return main
