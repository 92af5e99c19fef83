"""The sweep collector on fake run directories."""

from __future__ import annotations

import json
import os

import pytest

from neurmap.collect import collect, latest_sweep, main, to_markdown


def _job(sweep, name, overrides, metrics=None):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "final_metrics.json").write_text(json.dumps({"iterations": 600, "metrics": metrics}))


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "multiruns" / "2026-11-24_10-00-00"
    common = ["backbone=unet", "data=builtin"]
    _job(sweep, "0_neurmap-unet", [*common, "ratio=s1_n05"], {"test/a/psnr": 20.5, "val/a/psnr": 20.0})
    _job(sweep, "1_neurmap-unet", [*common, "ratio=s2_n01"], {"test/a/psnr": 21.25, "test/a/ssim": 0.75})
    _job(sweep, "10_neurmap-unet", [*common, "ratio=s1_n01"])  # still running or crashed
    (sweep / "multirun.yaml").write_text("{}")
    return sweep


def test_one_row_per_job_with_varying_overrides_and_final_metrics(sweep):
    rows = collect(sweep)
    assert [r["job"] for r in rows] == ["0_neurmap-unet", "1_neurmap-unet", "10_neurmap-unet"]  # numeric order
    assert [r["ratio"] for r in rows] == ["s1_n05", "s2_n01", "s1_n01"]
    assert all("backbone" not in r for r in rows)  # the same in every job
    assert rows[0]["test/a/psnr"] == 20.5 and "val/a/psnr" not in rows[0]
    assert rows[1]["test/a/ssim"] == 0.75 and rows[2]["status"] == "unfinished" and "test/a/psnr" not in rows[2]
    table = to_markdown(rows).splitlines()
    assert table[0] == "| job | status | ratio | iterations | test/a/psnr | test/a/ssim |"
    assert table[3] == "| 1_neurmap-unet | done | s2_n01 | 600 | 21.2500 | 0.7500 |"
    assert table[4] == "| 10_neurmap-unet | unfinished | s1_n01 |  |  |  |"


def test_cli_writes_tables_into_the_sweep(sweep, capsys):
    assert main(["latest=true", f"root={sweep.parent}", "prefix=val/"]) == 0
    assert latest_sweep(sweep.parent) == sweep
    md = (sweep / "sweep_summary.md").read_text()
    assert "| 0_neurmap-unet | done | s1_n05 | 600 | 20.0000 |" in md
    assert (sweep / "sweep_summary.csv").read_text().splitlines()[0] == "job,status,ratio,iterations,val/a/psnr"
    assert "3 runs" in capsys.readouterr().out


def test_missing_or_empty_sweeps_are_one_line_errors(tmp_path, capsys):
    assert main([f"sweep={tmp_path / 'nope'}"]) == 2
    assert "nope is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([f"sweep={tmp_path / 'empty'}"]) == 2
    assert "holds no Hydra job folder" in capsys.readouterr().err
    assert main(["latest=true", f"root={tmp_path / 'none'}"]) == 2
    assert "holds no sweep" in capsys.readouterr().err


def test_a_prefix_that_matches_no_metric_warns(sweep, capsys):
    assert main([f"sweep={sweep}", "prefix=foo/"]) == 0
    err = capsys.readouterr().err.strip()
    assert err == "neurmap.collect: warning: no metric starts with prefix=foo/; the jobs have test/, val/"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in read-only folders")
def test_a_read_only_sweep_is_one_line(sweep, capsys):
    from tests.helpers import checksums

    before = checksums(sweep)
    sweep.chmod(0o555)
    try:
        assert main([f"sweep={sweep}"]) == 2
    finally:
        sweep.chmod(0o755)
    assert capsys.readouterr().err.strip() == (
        f"neurmap.collect: error: sweep={sweep}: cannot write in {sweep} (permission denied or not a folder)"
    )
    assert checksums(sweep) == before
