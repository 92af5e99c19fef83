"""The habits every command shares: one-line errors with exit status 2, nothing overwritten or lost,
resumes that match their checkpoint, help that says what a command does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import torch
from omegaconf import OmegaConf

from neurmap.collect import main as collect_main
from neurmap.composition import check_command_line, explain, settings
from neurmap.config import FINAL_METRICS
from neurmap.data.io import write_image
from neurmap.errors import UsageError, unwrap_worker_error
from neurmap.tasks.training import train
from neurmap.train import main as train_main
from tests.conftest import REPO, compose, tiny_overrides
from tests.helpers import checksums


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["backbone=nope"], "backbone=nope: no such option; choose one of: dmphn, .*unet"),
        (["loss.lamda=1"], "unknown key 'loss.lamda'; the keys of loss are: .*lam, map_on_paired"),
        (["loss.beta=x"], "loss.beta: Value 'x' .* could not be converted to Float"),
        (["variant=net2,net3"], "sweeps only with -m"),
        (["-m", "variant=net2,nope"], "variant=nope: no such option"),
        (["-m", "loss.beta=0.1,x"], "loss.beta: Value 'x' .* could not be converted to Float"),
        (["a"], "cannot parse 'a': expected key=value"),
    ],
)
def test_hydra_composition_errors_are_one_line_with_status_2(overrides, message, capsys):
    assert train_main(overrides) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("neurmap.train: error: ")
    assert pytest.importorskip("re").search(message, err), err


@pytest.mark.parametrize("sweep", ["variant=net2,nope", "loss.beta=0.1,x", "loss.lamda=1,2"])
def test_a_bad_value_anywhere_in_a_sweep_is_one_line_before_any_folder(tmp_path, capsys, monkeypatch, sweep):
    monkeypatch.setenv("NEURMAP_LOG_DIR", str(tmp_path / "logs"))
    assert train_main(["-m", "iterations=1", sweep]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("neurmap.train: error: ")
    assert not (tmp_path / "logs").exists()


def test_a_sweep_is_checked_with_one_composition(monkeypatch):
    """The first job of a sweep is composed; the other values are checked without composing their jobs."""
    import hydra

    composed, real = [], hydra.compose
    monkeypatch.setattr(hydra, "compose", lambda *a, **k: composed.append(k["overrides"]) or real(*a, **k))
    cfg = check_command_line("train", ["variant=net2,net3", "loss.beta=0.1,0.5", "seed=1"], multirun=True)
    assert composed == [["variant=net2", "loss.beta=0.1", "seed=1"]]
    assert (cfg.hydra.runtime.choices.variant, cfg.loss.beta, cfg.seed) == ("net2", 0.1, 1)


def test_composition_errors_are_explained_from_their_fields_not_their_wording():
    from hydra.errors import MissingConfigException, OverrideParseException

    missing = MissingConfigException("reworded", missing_cfg_file="backbone/nope", options=["unet", "schema", "dmphn"])
    assert explain(missing) == "backbone=nope: no such option; choose one of: unet, dmphn"
    assert explain(OverrideParseException(override="a=[", message="reworded")).startswith("cannot parse 'a=[': ")


def test_plain_commands_share_the_unknown_key_message():
    with pytest.raises(UsageError, match="unknown key 'tilee'; the keys are: bits, ckpt, compare"):
        settings("deblur", ["tilee=3"])
    with pytest.raises(UsageError, match="unknown key 'kernel.nope'; the keys of kernel are: blurs_per_image"):
        settings("synthesize", ["kernel.nope=1"])


def test_help_says_what_the_command_does_and_lists_only_its_own_settings(capsys):
    assert train_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Train NeurMAP") and "\nusage: python -m neurmap.train" in out
    assert "variant    baseline, " in out and "iterations:" in out
    assert "hydra/launcher" not in out  # Hydra's own groups are behind --hydra-help
    assert "schema" not in out  # the structured schemas stored beside a group's options are no choice


def test_worker_errors_are_unwrapped_to_the_original_line():
    wrapped = (
        "Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 3, in f\n    raise ImageReadError(msg)\n'
        "neurmap.data.io.ImageReadError: /data/bad.png: not a readable image\n"
    )
    assert unwrap_worker_error(wrapped) == "/data/bad.png: not a readable image"
    assert explain(ValueError(wrapped)) == "/data/bad.png: not a readable image"


def test_corrupt_training_images_in_a_worker_give_one_line(tmp_path, capsys, monkeypatch):
    """A folder of corrupt images read by a DataLoader worker process: one line naming a file, status 1 (a failed
    run, as in every command)."""
    root = tmp_path / "folders"
    rng = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for side in ("input", "target"):
            write_image(root / "paired" / split / side / "p.png", torch.rand(3, 40, 40, generator=rng))
    for side in ("blur", "sharp"):
        (root / "unpaired" / side).mkdir(parents=True)
        for i in range(4):
            (root / "unpaired" / side / f"bad{i}.png").write_bytes(b"not an image")
    args = [
        *tiny_overrides("data=folders"),
        f"paths.folders={root}",
        "data.num_workers=1",
        "iterations=1",
        "data.batch_size_paired=1",
    ]
    args = [a for a in args if not a.startswith(("data.paired.num_images", "data.unpaired", "data.val.", "data.test."))]
    monkeypatch.setenv("NEURMAP_LOG_DIR", str(tmp_path / "logs"))
    assert train_main(args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("neurmap.train: error: ") and "bad" in last and "Traceback" not in last


# ----------------------------------------------------------------------------------- runs and resumes


def test_a_finished_run_is_never_rewritten(tmp_path, capsys):
    run = tmp_path / "run"
    train(compose(tiny_overrides("iterations=1", "test=false"), run))
    record = (run / FINAL_METRICS).read_bytes()
    with pytest.raises(UsageError, match="holds a finished run"):
        train(compose(tiny_overrides("iterations=1", "ckpt_path=last", "test=false"), run))
    assert train_main([*tiny_overrides("iterations=1"), f"hydra.run.dir={run}", "ckpt_path=last"]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert (run / FINAL_METRICS).read_bytes() == record


def test_a_resume_must_match_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    term = ["+callbacks.term._target_=tests.helpers.SigtermAtIteration", "+callbacks.term.iteration=1"]
    with pytest.raises(SystemExit):
        train(compose(tiny_overrides("iterations=3", "test=false", *term), run))
    with pytest.raises(UsageError, match="trained with iterations=3, this run has iterations=5: resume with"):
        train(compose(tiny_overrides("iterations=5", "ckpt_path=last", "test=false"), run))
    mismatch = "trained with model.deblur.name=unet, this run has model.deblur.name=dmphn: resume with backbone=unet,"
    with pytest.raises(UsageError, match=mismatch):
        train(compose(tiny_overrides("iterations=3", "backbone=dmphn", "ckpt_path=last", "test=false"), run))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x80\x04junk")
    with pytest.raises(UsageError, match="junk.ckpt: not a neurmap training checkpoint"):
        train(compose(tiny_overrides("iterations=3", f"ckpt_path={junk}", "test=false"), tmp_path / "other"))


@pytest.mark.parametrize("value", ["2.5", "abc", "0"])
def test_iterations_must_be_a_positive_integer(tmp_path, value):
    with pytest.raises(UsageError, match=f"iterations={value}: expected a positive integer"):
        train(compose(tiny_overrides(f"iterations={value}"), tmp_path / "run"))


def test_ctrl_c_resume_finds_interrupted_ckpt_and_counts_the_iteration_once(tmp_path):
    """Ctrl+C between the M and N steps of iteration 2 (of 3 optimizer steps each): interrupted.ckpt holds
    whole iterations, ckpt_path=last takes it, and the resumed run ends at exactly 3 x iterations steps."""
    run = tmp_path / "run"
    stop = ["+callbacks.stop._target_=tests.helpers.CtrlCAtStep", "+callbacks.stop.step=4"]
    with pytest.raises(BaseException):  # noqa: B017 - Lightning turns the interrupt into SystemExit
        train(compose(tiny_overrides("iterations=3", "test=false", *stop), run))
    interrupted = torch.load(run / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert interrupted["global_step"] == 3
    train(compose(tiny_overrides("iterations=3", "test=false", "ckpt_path=last"), run))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9
    assert json.loads((run / FINAL_METRICS).read_text())["iterations"] == 3


# ------------------------------------------------------------------------------------------- collect


def test_collect_takes_key_value_settings_and_is_a_script(tmp_path, capsys):
    assert collect_main([f"sweep={tmp_path / 'none'}"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert collect_main(["prefixx=val/"]) == 2
    assert "unknown key 'prefixx'" in capsys.readouterr().err
    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("neurmap-")}
    assert scripts["neurmap-collect"] == "neurmap.collect:main"


def test_synthesize_refuses_settings_that_would_write_nothing(tmp_path, capsys):
    from neurmap.synthesize import main as synthesize_main

    src = tmp_path / "src"
    write_image(src / "a.png", torch.rand(3, 32, 32))
    assert synthesize_main([f"src={src}", f"dst={tmp_path / 'dst'}", "kernel.blurs_per_image=0"]) == 2
    assert "kernel.blurs_per_image must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


# ------------------------------------------------------------------------------ stops, refusals, one line


def test_sigterm_stops_train_with_status_1_and_names_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    term = ["+callbacks.term._target_=tests.helpers.SigtermAtIteration", "+callbacks.term.iteration=1"]
    with pytest.raises(SystemExit) as stop:
        train(compose(tiny_overrides("iterations=3", "test=false", *term), run))
    assert stop.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"neurmap\.train: error: stopped by SIGTERM after \d+ iteration\(s\); saved {re.escape(str(run))}/checkpoints/"
        rf"last\.ckpt: resume with the same settings and hydra\.run\.dir={re.escape(str(run))} ckpt_path=last",
        last,
    ), last
    assert not (run / FINAL_METRICS).exists()


@pytest.mark.slow
def test_sigterm_during_set_up_stops_train_with_status_1_and_says_nothing_was_saved(tmp_path):
    """A `python -m neurmap.train` process sent SIGTERM while it builds its callbacks (before fit starts)."""
    run = tmp_path / "run"
    term = ["+callbacks.term._target_=tests.helpers.SigtermWhenBuilt", "test=false"]
    env = {**os.environ, "NEURMAP_LOG_DIR": str(tmp_path / "logs")}
    done = subprocess.run(
        [sys.executable, "-m", "neurmap.train", *tiny_overrides(*term), f"hydra.run.dir={run}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "neurmap.train: error: stopped by SIGTERM before training started; nothing was saved (run the same command "
        "again to start)"
    )
    assert "Traceback" not in done.stderr and not (run / "checkpoints").exists()


def _stopped_by_ctrl_c(run, capsys):
    """A 3-iteration run in ``run`` stopped by Ctrl+C in its second iteration (checkpoints/interrupted.ckpt)."""
    stop = ["+callbacks.stop._target_=tests.helpers.CtrlCAtStep", "+callbacks.stop.step=4"]
    with pytest.raises(SystemExit):
        train(compose(tiny_overrides("iterations=3", "test=false", *stop), run))
    capsys.readouterr()
    return run


def test_sigterm_during_the_set_up_of_a_resume_names_the_checkpoint_left_unchanged(tmp_path, capsys):
    run = _stopped_by_ctrl_c(tmp_path / "run", capsys)
    before = checksums(run / "checkpoints")
    term = ["+callbacks.term._target_=tests.helpers.SigtermWhenBuilt", "ckpt_path=last"]
    with pytest.raises(SystemExit) as stopped:
        train(compose(tiny_overrides("iterations=3", "test=false", *term), run))
    assert stopped.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"neurmap.train: error: stopped by SIGTERM before training started; nothing was saved; "
        f"{run}/checkpoints/interrupted.ckpt is unchanged: resume with the same settings and hydra.run.dir={run} "
        "ckpt_path=last"
    )
    assert checksums(run / "checkpoints") == before


def test_train_in_a_stopped_run_without_ckpt_path_is_refused(tmp_path, capsys):
    run = _stopped_by_ctrl_c(tmp_path / "run", capsys)
    before = checksums(run)
    assert train_main([*tiny_overrides("iterations=3", "test=false"), f"hydra.run.dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"neurmap.train: error: hydra.run.dir={run} holds a stopped run (checkpoints/interrupted.ckpt); resume it "
        "with ckpt_path=last, or leave hydra.run.dir out for a new run"
    )
    assert checksums(run) == before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed=abc: expected an integer"),
        ("model.deblur.optimizer.lr=-1", "model.deblur.optimizer.lr=-1: expected a learning rate >= 0"),
        ("iterations=abc", "iterations=abc: expected a positive integer (the number of training iterations)"),
        (
            "model.deblur.pretrained=???",
            "missing value for model.deblur.pretrained: set it on the command line, e.g. model.deblur.pretrained=...",
        ),
    ],
)
def test_wrong_values_name_the_key_and_leave_no_run_folder(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    assert train_main([*tiny_overrides(override), f"hydra.run.dir={run}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"neurmap.train: error: {message}"
    assert not run.exists()


def test_an_unwritable_run_folder_is_one_line_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    assert train_main([*tiny_overrides(), f"hydra.run.dir={blocker}/run"]) == 2
    err = capsys.readouterr().err.strip()
    expected = f"hydra.run.dir={blocker}/run: cannot write in {blocker} (permission denied or not a folder)"
    assert err == f"neurmap.train: error: {expected}"
    assert blocker.read_text() == "mine"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without a GPU")
def test_a_gpu_trainer_without_a_gpu_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main([*tiny_overrides("trainer=gpu"), f"hydra.run.dir={run}"]) == 2
    assert capsys.readouterr().err.strip() == (
        "neurmap.train: error: trainer=gpu needs a CUDA GPU, and torch finds none on this machine; train on the CPU "
        "with trainer=cpu (or trainer.accelerator=cpu)"
    )
    assert not run.exists()


def test_every_missing_data_folder_is_listed_at_once(tmp_path, capsys):
    run, none = tmp_path / "run", tmp_path / "none"
    overrides = [
        o
        for o in tiny_overrides("data=folders")
        if not o.startswith(("data.paired.", "data.unpaired", "data.val.", "data.test."))
    ]
    assert train_main([*overrides, f"paths.folders={none}", f"hydra.run.dir={run}"]) == 2
    missing = [
        none / "paired" / "train",
        none / "unpaired" / "blur",
        none / "unpaired" / "sharp",
        none / "paired" / "test",
    ]
    assert capsys.readouterr().err.strip() == (
        f"neurmap.train: error: data=folders: 4 data folder(s) do not exist: {', '.join(map(str, missing))} "
        "(set NEURMAP_DATA, or paths.<dataset>=<folder>; see README 'Data')"
    )
    assert not run.exists()


def test_the_progress_bar_counts_iterations_to_the_end(tmp_path, capsys):
    overrides = [o for o in tiny_overrides("test=false", "iterations=4") if "enable_progress_bar" not in o]
    train(compose([*overrides, "trainer.enable_progress_bar=true"], tmp_path / "run"))
    out = capsys.readouterr().out  # Lightning's bars write to stdout
    assert "4/4" in out and "4/12" not in out


def test_one_last_checkpoint_and_a_reason_for_empty_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    train(compose(tiny_overrides("test=false", "iterations=1", "trainer.val_check_interval=5"), run))
    assert sorted(p.name for p in (run / "checkpoints").glob("last*")) == ["last.ckpt"]
    out = capsys.readouterr().out
    assert f"checkpoints:   {run}/checkpoints/last.ckpt (last)" in out
    record = json.loads((run / FINAL_METRICS).read_text())
    assert record["metrics"] == {} and record["metrics_empty"].startswith("test=false: the test sets were not run")


@pytest.mark.parametrize("command", ["train", "evaluate", "deblur", "export", "synthesize", "collect"])
def test_every_help_has_one_shape(command, capsys):
    module = __import__(f"neurmap.{command}", fromlist=["main"])
    status = module.main(["--help"])
    out = capsys.readouterr().out
    assert status == 0 and not out.startswith("usage")
    marks = ["\nusage: python -m neurmap.", f"\nsettings (conf/{command}.yaml; key=value", "\n--cfg job prints"]
    assert [out.index(m) for m in marks] == sorted(out.index(m) for m in marks)


@pytest.mark.parametrize(
    ("command", "key"), [("deblur", "tile: 512"), ("synthesize", "mode: kernel"), ("collect", "latest: false")]
)
def test_plain_commands_take_cfg_job(command, key, capsys):
    module = __import__(f"neurmap.{command}", fromlist=["main"])
    assert module.main(["--cfg", "job"]) == 0
    assert key in capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        ("deblur", ["photos", "out", "ckpt=a.ckpt"], "'photos' is not key=value: write input=photos (usage: "),
        ("deblur", ["input=photos", "out", "ckpt=a.ckpt"], "'out' is not key=value: write output=out (usage: "),
        ("synthesize", ["frames", "pairs"], "'frames' is not key=value: write src=frames (usage: "),
        ("collect", ["logs/x"], "'logs/x' is not key=value: write sweep=logs/x (usage: "),
        ("export", ["ckpt=a.ckpt", "--format", "onnx"], "unknown flag --format: the flags are --help and --cfg job"),
        ("deblur", ["--cfg", "all"], "--cfg takes one value, job"),
    ],
)
def test_plain_commands_take_key_value_only(command, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = __import__(f"neurmap.{command}", fromlist=["main"])
    assert module.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"neurmap.{command}: error: {message}") and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name",
    ["IMG (1).jpg", "a,b.png", "x=1.png", "ünïcode 日本.png", "it's.png", "#7.png", "[1].png", "${HOME}.png"]
    + ["C:\\x\\"],
)
def test_plain_commands_take_any_file_name_as_written(name, capsys):
    from neurmap.deblur import main as deblur_main

    assert deblur_main(["--cfg", "job", f"input=photos/{name}", f"output={name}"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert (printed.input, printed.output) == (f"photos/{name}", name)


def test_plain_commands_read_values_the_grammar_knows(capsys):
    from neurmap.export import main as export_main

    assert export_main(["--cfg", "job", "ckpt=release:dmphn_1_2_4", "example_size=[32,48]", "output=null"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert (printed.ckpt, list(printed.example_size), printed.output) == ("release:dmphn_1_2_4", [32, 48], None)


def test_a_sweep_that_fails_on_a_usage_error_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NEURMAP_LOG_DIR", str(tmp_path / "logs"))
    assert train_main(["-m", *tiny_overrides("iterations=abc,2")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "neurmap.train: error: iterations=abc: expected a positive integer (the number of training iterations)"
    )
    sweeps = tmp_path / "logs" / "train" / "multiruns"
    assert not sweeps.exists() or not any(sweeps.iterdir())


@pytest.mark.parametrize("full_error", ["0", "1"])
def test_a_sweep_job_that_only_a_later_value_breaks_is_one_line_and_leaves_no_folder(
    tmp_path, capsys, monkeypatch, full_error
):
    """unet's D has a width and mprnet's has none: the sweep's first job composes, its second does not."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", full_error)
    sweep = tmp_path / "sweep"
    assert train_main(["-m", "backbone=unet,mprnet", "model.deblur.net.width=8", f"hydra.sweep.dir={sweep}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "neurmap.train: error: job backbone=mprnet model.deblur.net.width=8: unknown key 'model.deblur.net.width'; "
        "the keys of model.deblur.net are: _target_, bias, in_c, "
    )
    if full_error == "1":  # the user's own HYDRA_FULL_ERROR=1 still shows the traceback, and the status stays 2
        assert err[0] == "Traceback (most recent call last):"
    else:
        assert len(err) == 1, err
    assert os.environ["HYDRA_FULL_ERROR"] == full_error
    assert not sweep.exists()


def test_a_sweep_job_that_does_not_compose_keeps_the_jobs_that_ran(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    args = tiny_overrides("backbone=unet,mprnet", "model.deblur.net.width=8", "iterations=1", "test=false")
    assert train_main(["-m", *args, "hydra.sweeper.max_batch_size=1", f"hydra.sweep.dir={sweep}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("neurmap.train: error: job ") and "backbone=mprnet" in err, err
    assert (sweep / "0_neurmap-unet" / FINAL_METRICS).is_file()


def test_a_crash_in_a_job_keeps_its_traceback_and_status_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr("neurmap.train.train", lambda cfg: 1 / 0)
    assert train_main([f"hydra.run.dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and "ZeroDivisionError: division by zero" in err
    assert "HYDRA_FULL_ERROR" not in os.environ
