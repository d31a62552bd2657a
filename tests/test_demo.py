"""`study demo` end to end: study file -> Ray Tune -> Parquet -> report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from study.cli import main


@pytest.mark.slow
def test_demo_command_writes_report(ray_session, tiny_study_path, tmp_path, capsys):
    """The demo's code path (on the tiny study) leaves a report with both blocks per fraction
    (slow lane: the default lane covers its parts, `launch` in test_orchestrate and `report`
    in test_analysis_report)."""
    storage = tmp_path / "storage"
    assert main(["demo", "--study", str(tiny_study_path), "--storage", str(storage)]) == 0
    index = storage / "tiny" / "report" / "index.md"
    text = index.read_text()
    assert "w/ post-processing" in text and "w/o post-processing" in text
    assert "| Vanilla | — |" in text and "Asymmetric focal loss | γ = 2" in text
    assert (storage / "tiny" / "report" /
            "sensitivity_synthetic-brats_unet-tiny_0.5_tumour_core.csv").exists()
    out = capsys.readouterr().out
    assert "[2/2]" in out and f"report: {index}" in out


def test_cli_reports_bad_study_file_clearly(tmp_path, capsys):
    """A bad study file is one error line naming the file and key, exit status 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    assert main(["launch", str(bad), "--storage", str(tmp_path)]) == 2
    assert f"{bad}: dataset: required key is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_full_demo_from_the_readme(tmp_path):
    """`study demo` with the embedded default study (a few minutes on 2 cores)."""
    result = subprocess.run([sys.executable, "-m", "study.cli", "demo", "--storage",
                             str(tmp_path)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "demo" / "report" / "index.md").exists()
    assert "[14/14]" in result.stdout
