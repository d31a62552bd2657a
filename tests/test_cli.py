"""The `study` command line without Ray: version, study names, early errors, status, study.json.

Every error is one line on stderr with a non-zero exit status, and no traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import real_study_file

import study
from study.cli import main
from study.expand import expand
from study.run_options import RunOptions, record_failure

ROOT = Path(__file__).resolve().parent.parent


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``study ARGV`` run in this process."""
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def _one_line_error(err: str, fragment: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("study"), err
    assert fragment in lines[0], err


def test_version_names_package_and_commit(capsys):
    """`study --version`: the package version and the code's commit (+ -dirty) in a git
    checkout — the same string stored as `code_version` in every trials row."""
    status, out, _ = cli(["--version"], capsys)
    assert status == 0
    assert out == f"study {study.__version__} (code {study.code_version()})\n"
    if (ROOT / ".git").exists() and shutil.which("git"):
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert re.fullmatch(rf"{head}(-dirty)?", study.code_version())


@pytest.mark.parametrize("command", ["status", "report", "resume"])
@pytest.mark.parametrize("name", ["../other", "/tmp", "a/../../b", "..", "Tiny", "a/b"])
def test_study_names_cannot_leave_the_storage(command, name, tmp_path, capsys):
    """A study name is a name (the study file's rule), never a path: no command reads or
    writes outside STORAGE/NAME."""
    storage = tmp_path / "storage"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "study.json").write_text("{}")
    status, out, err = cli([command, name, "--storage", str(storage)], capsys)
    assert status == 2 and out == ""
    _one_line_error(err, "study name")
    assert not storage.exists()


def _bad_launches(tmp_path: Path, tiny: Path):
    """(arguments, fragment of the error) of launches refused before Ray starts."""
    storage = str(tmp_path / "storage")
    (tmp_path / "empty").mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(tiny.read_bytes().replace(b"# A study", b"# \xe9tude: a study"))
    twice = tmp_path / "twice.yaml"
    twice.write_text(tiny.read_text().replace("gamma: [2]", "gamma: [2, 2.0]"))
    readonly = Path("/sys/study-storage") if os.geteuid() == 0 else tmp_path / "readonly"
    if os.geteuid() != 0:
        readonly.mkdir(mode=0o555)
    cases = [
        ([str(real_study_file(tmp_path, tmp_path / "nowhere"))], "dataset folder not found"),
        ([str(real_study_file(tmp_path, tmp_path / "empty"))], "no cases found"),
        ([str(tiny), "--storage", str(a_file)], str(a_file)),
        ([str(tiny), "--storage", str(readonly)], str(readonly)),
        ([str(latin1)], "not UTF-8 text (byte 0xe9"),
        ([str(twice)], "appears twice"),
        ([str(tiny), "--cpus-per-trial", "nan"], "expected a positive number"),
        ([str(tiny), "--cpus-per-trial", "-1"], "expected a positive number"),
        ([str(tiny), "--mode", "optimize", "--budget", "0"], "expected a whole number >= 1"),
        ([str(tiny), "--device", "gpu"], "expected auto, cpu, cuda or cuda:N"),
    ]
    import torch

    if not torch.cuda.is_available():
        cases.append(([str(tiny), "--device", "cuda"], "--device cuda: no CUDA device"))
    return [(["launch", *args, *([] if "--storage" in args else ["--storage", storage])],
             fragment) for args, fragment in cases]


def test_launch_refuses_what_it_can_check_before_ray(tmp_path, tiny_study_path, capsys):
    """Missing or empty dataset folder, storage that is a file or read-only, a non-UTF-8
    study file, a grid point given twice, NaN/negative CPUs, a zero budget, an unknown or
    absent device: each one line, exit 2, nothing run."""
    for argv, fragment in _bad_launches(tmp_path, tiny_study_path):
        status, _, err = cli(argv, capsys)
        assert status == 2, (argv, err)
        _one_line_error(err, fragment)
    assert not (tmp_path / "storage" / "tiny" / "results").exists()


def _plan(tmp_path: Path, tiny_spec, storage: Path | None = None):
    from study.stored_plan import Plan, study_uri

    storage = storage or tmp_path / "storage"
    uri = study_uri(str(storage), "tiny")
    options = RunOptions(data_dir=str(storage / "data"), results_uri=f"{uri}/results")
    params = [t.as_param() for t in expand(tiny_spec)]
    plan = Plan.create("tiny", params, options, str(storage), cpus_per_trial=1,
                       gpus_per_trial=0)
    plan.save(uri)
    return plan, uri, options


def test_status_exits_1_with_the_reason_of_a_failed_trial(tmp_path, tiny_spec, capsys):
    """A failed trial (here one that failed before training) makes `study status` exit 1 and
    print its reason; --json carries the same; a damaged heartbeat is a warning line."""
    plan, uri, options = _plan(tmp_path, tiny_spec)
    storage = str(tmp_path / "storage")
    status, out, _ = cli(["status", "tiny", "--storage", storage], capsys)
    assert status == 0 and out.splitlines()[0].split()[-5:] == [
        "done", "running", "pending", "failed", "diverged"]
    failed = plan.trials[0]["trial_id"]
    record_failure(plan.trials[0], options, ValueError("dataset brats: no folder given"))
    (Path(uri) / "results" / "running").mkdir(parents=True)
    (Path(uri) / "results" / "running" / f"{plan.trials[1]['trial_id']}.json").write_text(
        '{"updated_at": ')
    status, out, _ = cli(["status", "tiny", "--storage", storage], capsys)
    assert status == 1
    assert f"failed {failed}: ValueError: dataset brats: no folder given" in out
    assert "warning:" in out and "unreadable heartbeat" in out
    status, out, _ = cli(["status", str(ROOT / "tests/data/tiny-study.yaml"), "--storage",
                          storage, "--json"], capsys)
    record = json.loads(out)
    assert status == 1 and record["study"] == "tiny" and record["mode"] == "grid"
    assert record["failed"] == [{"trial_id": failed,
                                 "error": "ValueError: dataset brats: no folder given"}]



def test_a_param_whose_config_cannot_be_read_still_stores_a_failed_row(tmp_path):
    """``record_failure`` of a param whose config lacks a key (which ``identity_columns``
    refuses by name) stores a ``failed`` row with the identity it can read and the error."""
    from analysis._synthetic import full_config
    from study.results import ResultStore, identity_columns

    config = full_config()
    del config["training"]
    param = {"study": "s", "trial_id": f"{0:016x}", "param_label": "—", "config": config}
    with pytest.raises(ValueError, match=r"missing key\(s\) \['training'\]"):
        identity_columns(param)
    record_failure(param, RunOptions(data_dir=str(tmp_path), results_uri=str(tmp_path)),
                   "ValueError: boom")
    trials = ResultStore(str(tmp_path)).read(cases=False).trials
    assert trials[["trial_id", "technique", "status", "error"]].values.tolist() == [
        [f"{0:016x}", "vanilla", "failed", "ValueError: boom"]]

def test_study_json_is_relative_atomic_and_damage_is_named(tmp_path, tiny_spec, capsys):
    """study.json names the results and data folders relative to the storage, so a storage
    moved elsewhere resumes in place; it is written without temporary leftovers; a cut-short
    copy is one clear error naming the file in status, report and resume."""
    from study.stored_plan import Plan

    plan, uri, _ = _plan(tmp_path, tiny_spec)
    text = (Path(uri) / "study.json").read_text()
    assert str(tmp_path) not in text
    assert [p.name for p in Path(uri).iterdir()] == ["study.json"]
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "storage", moved)
    options = Plan.load(str(moved / "tiny")).run_options(str(moved / "tiny"))
    assert options.results_uri == f"{moved}/tiny/results"
    assert options.data_dir == f"{moved}/data"
    (moved / "tiny" / "study.json").write_text(text[: len(text) // 2])
    for command in ("status", "report", "resume"):
        status, _, err = cli([command, "tiny", "--storage", str(moved)], capsys)
        assert status == 2
        _one_line_error(err, f"{moved}/tiny/study.json: damaged study.json, cut short")
    status, _, err = cli(["status", "nothing", "--storage", str(moved)], capsys)
    assert status == 2
    _one_line_error(err, "no launched study here")


def test_report_and_analysis_share_their_options(capsys):
    """`study report` and `python -m analysis` take the same report options, defined once."""
    import argparse

    from analysis.__main__ import main as analysis_main
    from study.cli import build_parser
    from study.report_options import add_report_options

    reference = argparse.ArgumentParser()
    add_report_options(reference, out_required=False)
    shared = set(vars(reference.parse_args([])))
    assert shared and shared <= set(vars(build_parser().parse_args(["report", "tiny"])))
    with pytest.raises(SystemExit):
        analysis_main(["--help"])
    text = capsys.readouterr().out
    assert all(option in text for option in ("--select-on", "--select-raw", "--emphasis",
                                             "--strict", "--quiet", "--no-figures"))


def test_every_argument_has_help(capsys):
    """Every option and positional of every command says what it is for."""
    import argparse

    from study.cli import build_parser

    def walk(parser):
        """Each argument of ``parser`` and of its sub-commands, as its help lists them."""
        listed = []

        class Listing(argparse.HelpFormatter):
            def add_argument(self, action):
                listed.append(action)
                super().add_argument(action)

        parser.formatter_class = Listing
        parser.format_help()
        for action in listed:
            if isinstance(action.choices, dict):
                for sub in action.choices.values():
                    yield from walk(sub)
            else:
                yield parser.prog, action

    arguments = list(walk(build_parser()))
    assert {prog for prog, _ in arguments} >= {"study", "study launch", "study data check"}
    assert [f"{prog}: {a.dest}" for prog, a in arguments if a.help is None] == []
    status, out, _ = cli(["launch", "--help"], capsys)
    assert status == 0 and "default: ./study-results" in out


def test_help_and_version_start_no_ray():
    """`study --version` reads git, nothing heavier (no Ray, no torch)."""
    code = ("import sys; from study.cli import main; rc = main(['--version']); "
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_a_study_larger_than_the_limit_is_refused_before_ray(tmp_path, capsys):
    """`--max-trials`: an experiment of more trials than the limit is one error naming the
    count, before anything starts; the default limit is printed in the help."""
    status, _, err = cli(["launch", str(ROOT / "tests/data/tiny-study.yaml"), "--storage",
                          str(tmp_path), "--max-trials", "1"], capsys)
    assert status == 2
    _one_line_error(err, "expands to 2 trials, more than the limit of 1")
    assert not (tmp_path / "tiny").exists()


def test_compact_command_merges_a_studys_files(tmp_path, capsys):
    """`study compact NAME`: the finished trials' files become one file per table, and the
    same trials read back."""
    from analysis._synthetic import full_config
    from study.results import ResultStore, identity_columns

    results = tmp_path / "tiny" / "results"
    store = ResultStore(str(results))
    for n in range(3):
        identity = identity_columns({
            "study": "tiny", "trial_id": f"{n:016x}", "param_label": "—",
            "config": full_config(seed=n)})
        store.write_trial({**identity, "status": "ok", "config": "{}"},
                          [{**identity, "case_id": "c0", "class_name": "tumour",
                            "postprocessed": False, "dsc": 0.5, "status": "ok"}])
    before = ResultStore(str(results)).finished_ids()
    status, out, err = cli(["compact", "tiny", "--storage", str(tmp_path)], capsys)
    assert status == 0, err
    assert "moved 3 trial(s)" in out
    assert ResultStore(str(results)).finished_ids() == before
    assert not list((results / "cases").glob("*.parquet"))
