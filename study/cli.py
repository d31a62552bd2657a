"""``study``: run, resume, inspect and report hyperparameter sensitivity studies.

    study demo                              the embedded default, locally on the CPU
    study plan STUDY [--json]               the trials a study will run (nothing is trained)
    study launch STUDY [--storage URI] [--address auto] [--mode optimize]
    study resume STUDY [--storage URI]      continue after Ctrl-C, a crash or failed trials
    study status STUDY [--storage URI] [--json]
    study report STUDY [--storage URI] [--out DIR]
    study data check ROOT --layout NAME [--figures DIR]
                                            validate a dataset folder (every problem listed;
                                            NAME nnunet or msd: a folder with dataset.json);
                                            DIR: its intensity histograms and class voxels
    study figures losses DIR                every loss and its gradient vs the true-class logit

STUDY is a study file, or the name of a shipped study (search_spaces/studies/NAME.yaml) or
of a launched one. Studies live in STORAGE/NAME (default storage: ./study-results, a folder
or a URI such as s3://bucket/studies that every Ray node sees).

Ctrl-C pauses a launch: the trials stop, their state is saved, and `study resume` continues
each from its last checkpoint. Optimize mode keeps Optuna's record in
STORAGE/NAME/optuna.journal: `optuna-dashboard STORAGE/NAME/optuna.journal` shows it.
Errors are one line (exit 2); --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from study.expand import MAX_TRIALS

STUDIES_DIR = Path(__file__).resolve().parent.parent / "search_spaces" / "studies"
DEMO_STUDY = STUDIES_DIR / "demo.yaml"
DEFAULT_STORAGE = "study-results"
INTERRUPTED = 130  # the shell's exit status after SIGINT


def _say(message: str) -> None:
    print(message, flush=True)


def _dataset_roots(specs, overrides: list[str] | None) -> dict[str, str]:
    """Each real dataset's folder: the study's ``root``, replaced by ``--dataset-root``
    (``NAME=PATH``, or just ``PATH`` for a single-dataset study), as absolute paths."""
    from study.spec import SpecError

    roots = {s.dataset.name: s.dataset.root for s in specs if s.dataset.root}
    names = {s.dataset.name for s in specs}
    for item in overrides or []:
        name, sep, path = item.partition("=")
        if not sep:
            if len(names) != 1:
                raise SpecError(f"--dataset-root {item}: the study has datasets "
                                f"{sorted(names)}; write NAME=PATH")
            name, path = next(iter(names)), item
        if name not in names:
            raise SpecError(f"--dataset-root {item}: {name!r} is not a dataset of the study "
                            f"({sorted(names)})")
        roots[name] = path
    return {name: str(Path(path).resolve()) for name, path in roots.items()}


def study_file(given: str) -> Path:
    """A study file's path, or the file of a shipped study named ``given``
    (``search_spaces/studies/<name>.yaml``); the file must be UTF-8 text."""
    from study.spec import SpecError

    path = Path(given)
    if not path.is_file():
        shipped = STUDIES_DIR / f"{given}.yaml"
        if "/" in given or not shipped.is_file():
            names = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.yaml")))
            raise SpecError(f"{given}: no such study file, nor a shipped study of that name "
                            f"(shipped: {names})")
        path = shipped
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at "
                        f"offset {error.start}); save the study file as UTF-8") from error
    except OSError as error:
        raise SpecError(f"{path}: cannot read: {error.strerror}") from error
    return path


def study_name(given: str) -> str:
    """The study that ``given`` names: an existing study file's ``name``, else ``given``
    itself, which must be a study name (no path: ``study.stored_plan.study_uri``)."""
    from study.spec import load_studies
    from study.stored_plan import study_uri

    if Path(given).is_file():
        return load_studies(study_file(given))[0].name
    study_uri(".", given)
    return given


def _storage(given: str) -> str:
    """``--storage`` as an absolute path (a URI as given)."""
    return given if "://" in given else str(Path(given).resolve())


def _same(specs, field: str) -> int:
    """A run option every experiment of the study must share (``training.<field>``)."""
    from study.spec import SpecError

    values = {getattr(s.training, field) for s in specs}
    if len(values) > 1:
        raise SpecError(f"{specs[0].source}: training.{field}: the experiments disagree "
                        f"({sorted(values)}); it is a run option shared by the whole study")
    return values.pop()


def _runner(args: argparse.Namespace) -> dict[str, Any]:
    """The ``study.orchestrate.Runner`` fields from the command line."""
    return {"address": args.address, "num_cpus": args.num_cpus,
            "max_failures": args.max_failures, "printer": _say,
            "live": sys.stdout.isatty(), "every": args.progress_every}


def _launch(study_file: str | Path, args: argparse.Namespace) -> tuple[int, str]:
    """Run a study file's trials (grid or optimize mode); return (exit status, study name)."""
    from study import orchestrate, tracking
    from study.expand import expand
    from study.run_options import RunOptions
    from study.spec import SpecError, load_studies
    from study.stored_plan import study_uri

    specs = load_studies(study_file)
    name = specs[0].name
    trials = [trial for spec in specs for trial in expand(spec, args.max_trials)]
    if len({t.trial_id for t in trials}) != len(trials):
        raise SpecError(f"{study_file}: experiments: two experiments describe the same trial")
    storage = _storage(args.storage)
    data_dir = args.data_dir or str(Path(storage if "://" not in storage else ".") / "data")
    mlflow = args.mlflow
    if mlflow is not None:
        mlflow = mlflow or tracking.default_uri(storage)
        tracking.experiment_id(tracking.client(mlflow), name)  # fails here, not in a trial
    options = RunOptions(
        data_dir=str(Path(data_dir).resolve()),
        results_uri=f"{study_uri(storage, name)}/results",
        dataset_roots=_dataset_roots(specs, args.dataset_root),
        device=args.device,
        checkpoint_every=_same(specs, "checkpoint_every"),
        validate_every=_same(specs, "validate_every"),
        compile=args.compile,
        threads=max(1, int(args.cpus_per_trial)),
        mlflow_uri=mlflow,
    )
    if getattr(args, "mode", "grid") == "optimize":
        from study import optimize

        best = optimize.launch(specs, storage, options, budget=args.budget, metric=args.metric,
                               prune=args.prune, max_concurrent=args.max_concurrent,
                               cpus_per_trial=args.cpus_per_trial, gpus=args.gpus_per_trial,
                               **_runner(args))
        groups = sum(len(optimize.search_groups(spec)) for spec in specs)
        _say(f"{len(best)} of {groups} group(s) optimised; best settings: "
             f"{study_uri(storage, name)}/optimize/*.json; Optuna's record: "
             f"optuna-dashboard {study_uri(storage, name)}/{optimize.JOURNAL}")
        return (0 if len(best) == groups else 1), name
    for spec in specs:
        _say(f"study {name}: {spec.dataset.name} with {spec.model}-{spec.model_preset}: "
             f"{len(spec.fractions)} fraction(s) x "
             f"{sum(len(t.settings) for t in spec.techniques)} setting(s) x "
             f"{len(spec.seeds)} seed(s) from {study_file}")
    missing = orchestrate.launch(trials, storage, options, cpus_per_trial=args.cpus_per_trial,
                          gpus=args.gpus_per_trial, **_runner(args))
    return _finish(name, storage, missing), name


def _finish(name: str, storage: str, missing: list[dict]) -> int:
    """Say what is missing (trials, or optimize-mode search groups) and where results are."""
    if missing:
        what = ("search group(s) are unfinished" if "space" in missing[0]
                else "trial(s) have no results (failed)")
        _say(f"{len(missing)} {what}: `study status {name} --storage {storage}` shows why; "
             "`study resume` runs them again")
    _say(f"results: {storage}/{name}/results (Parquet tables `cases` and `trials`)")
    return 1 if missing else 0


# -- report options, shared with `python -m analysis` -------------------------------------------
def _report(name: str, storage: str, args: argparse.Namespace) -> Path:
    """Write the study's report (tables, figures, index.md/index.html) into ``args.out``
    (default ``<storage>/<name>/report``) with :func:`add_report_options`'s options; return
    index.md. Damaged or malformed result files are skipped and listed in the report
    (``--strict``: an error)."""
    import analysis
    from study.stored_plan import Plan, study_uri

    uri = study_uri(storage, name)
    plan = Plan.load(uri)
    search_metric = (plan.search or {}).get("metric", "dsc_pp")
    from study.report_options import report_options

    kwargs = report_options(args, select_raw=search_metric == "dsc_raw", printer=_say)
    out_dir = Path(args.out or (Path(uri) / "report" if "://" not in uri else f"{name}-report"))
    results = analysis.load_results(f"{uri}/results",
                                    errors="raise" if args.strict else "skip")
    # Only this launch's trials: results of an earlier version of the study file (or of an
    # Optuna search) stay on disk but must not be averaged into its tables.
    results = results.restrict({t["trial_id"] for t in plan.trials})
    finished = results.finished_ids()
    pending = [t for t in plan.trials if t["trial_id"] not in finished]
    paths = analysis.write_report(results, out_dir, title=args.title or f"Study {name}",
                                  missing=len(pending), pending=pending, **kwargs)
    return paths[-1]


# -- commands ---------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    start = time.monotonic()
    status, name = _launch(args.study, args)
    index = _report(name, _storage(args.storage), args)
    _say(index.read_text(encoding="utf-8"))
    _say(f"demo finished in {time.monotonic() - start:.0f} s; report: {index}")
    return status


def cmd_launch(args: argparse.Namespace) -> int:
    return _launch(study_file(args.study), args)[0]


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from study.plan import plan, summary
    from study.spec import load_studies

    path = study_file(args.study)
    planned = plan(load_studies(path))
    if args.json:
        print(json.dumps(planned, ensure_ascii=False))
    else:
        _say(summary(planned, path))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from study import orchestrate

    name, storage = study_name(args.study), _storage(args.storage)
    plan, uri, run = orchestrate.prepare_resume(name, storage, **_runner(args))
    if plan.mode == "optimize":
        from study import optimize

        return _finish(name, storage, optimize.resume(plan, uri, run))
    return _finish(name, storage, orchestrate.resume(plan, uri, run))


def cmd_status(args: argparse.Namespace) -> int:
    """Counts per group, failures with their reasons, result files left out, running trials
    from their heartbeats; exit 1 when trials failed."""
    import json

    from study import progress
    from study.status import status_table
    from study.stored_plan import Plan, study_uri

    name, storage = study_name(args.study), _storage(args.storage)
    uri = study_uri(storage, name)
    plan = Plan.load(uri)
    status = status_table(plan, f"{uri}/results")
    by_trial, damaged = progress.read_beats(f"{uri}/results")
    planned = {t["trial_id"] for t in plan.trials}
    beats = [b for t, b in sorted(by_trial.items()) if t in planned]
    if args.json:
        print(json.dumps({"study": name, "mode": plan.mode, "storage": storage,
                          "groups": status.table.to_dict("records"),
                          "failed": [{"trial_id": t, "error": e} for t, e in status.failures],
                          "left_out": [{"file": f, "reason": r} for f, r in status.left_out],
                          "heartbeats": beats, "damaged": sorted(damaged.values())},
                         default=str, ensure_ascii=False))
        return 1 if status.failures else 0
    _say(status.table.to_string(index=False))
    for beat in beats:
        stopped = ", interrupted" if beat.get("interrupted_at") else ""
        _say(f"heartbeat {beat.get('label', beat.get('trial_id'))}: iteration "
             f"{beat.get('iteration')}/{beat.get('total')}, last at {beat['updated_at']}"
             f"{stopped}")
    for problem in sorted(damaged.values()):
        _say(f"warning: {problem}")
    for path, reason in status.left_out:
        _say(f"left out {path}: {reason} (its trial runs again)")
    for trial_id, error in status.failures:
        _say(f"failed {trial_id}: {error}")
    return 1 if status.failures else 0


def cmd_report(args: argparse.Namespace) -> int:
    index = _report(study_name(args.study), _storage(args.storage), args)
    _say(f"report: {index} (and {index.with_suffix('.html').name}; its \"What is missing\" "
         "section lists what could not be built yet)")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from study.compact import compact
    from study.stored_plan import study_uri

    name, storage = study_name(args.study), _storage(args.storage)
    done = compact(f"{study_uri(storage, name)}/results")
    _say(f"moved {len(done.moved)} trial(s) into {done.part}; removed {len(done.deleted)} "
         "file(s)")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from study.data import check

    return check.run(args.root, args.layout, printer=_say, figures=args.figures)


def cmd_figures_losses(args: argparse.Namespace) -> int:
    from study import loss_curves

    for path in loss_curves.write(args.folder):
        _say(str(path))
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    import study

    _say(f"study {study.__version__} (code {study.code_version()})")
    return 0


# -- arguments --------------------------------------------------------------------------------
def _number(kind, minimum: float, inclusive: bool, what: str):
    """An argparse type: a finite ``kind`` above ``minimum`` (or equal, ``inclusive``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}")
        return value

    return parse


POSITIVE = _number(float, 0, False, "a positive number")
SHARE = _number(float, 0, True, "a number >= 0")
COUNT = _number(int, 1, True, "a whole number >= 1")
RETRIES = _number(int, 0, True, "a whole number >= 0")


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected auto, cpu, cuda or cuda:N")


STUDY_HELP = ("study file, or the name of a shipped study (search_spaces/studies/NAME.yaml) "
              "or of a launched study in --storage")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``--help`` shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` shows usage)\n")


def build_parser() -> argparse.ArgumentParser:
    """A new parser of the ``study`` command line (the module docstring), each command a
    sub-parser whose parsed arguments carry the command's function as ``func``; errors exit 2
    in one line. Imports neither torch nor Ray."""
    from study.report_options import add_report_options

    parser = _Parser(prog="study", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true",
                        help="print the package version and the code's git commit, then exit")
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common])

    def storage(p):
        p.add_argument("--storage", default=DEFAULT_STORAGE,
                       help="folder or URI (s3://...) holding the studies, each in "
                       "STORAGE/NAME (default: ./%(default)s)")

    def ray_options(p):
        p.add_argument("--address", default=None,
                       help="Ray cluster address ('auto' on a cluster); default: start a "
                       "local Ray")
        p.add_argument("--num-cpus", type=COUNT, default=None,
                       help="CPUs of a local Ray (default: all)")
        p.add_argument("--max-failures", type=RETRIES, default=1,
                       help="retries of a failed trial, from its last checkpoint (default: 1)")
        p.add_argument("--progress-every", type=POSITIVE, default=30.0, metavar="SECONDS",
                       help="without a terminal: a progress line per running trial this often "
                       "(default: 30)")

    def run_options(p):
        storage(p)
        ray_options(p)
        p.add_argument("--data-dir", default=None,
                       help="where synthetic datasets are generated (default: STORAGE/data)")
        p.add_argument("--dataset-root", action="append", metavar="[NAME=]PATH",
                       help="folder of a real dataset's cases (repeat for several datasets)")
        p.add_argument("--compile", default=None,
                       choices=("default", "reduce-overhead", "max-autotune"),
                       help="torch.compile mode on CUDA (default: eager)")
        p.add_argument("--device", type=_device, default="auto",
                       help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
        p.add_argument("--cpus-per-trial", type=POSITIVE, default=1,
                       help="CPUs Ray reserves per trial (default: 1)")
        p.add_argument("--gpus-per-trial", type=SHARE, default=None,
                       help="GPU share per trial (default: by model when Ray sees GPUs: "
                       "DeepMedic 0.25, paper U-Net 1, tiny models 0.125; else 0)")
        p.add_argument("--max-trials", type=COUNT, default=MAX_TRIALS, metavar="N",
                       help="refuse an experiment of more than N trials (default: "
                       f"{MAX_TRIALS:,}; a guard against a grid larger than meant)")
        p.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                       help="log every trial to MLflow (needs the [mlflow] extra): params, "
                       "loss and validation-DSC curves, case table; URI default: "
                       "file:STORAGE/mlruns")

    demo = command("demo", "run the embedded demo study and write its report")
    run_options(demo)
    demo.add_argument("--study", default=str(DEMO_STUDY), help=argparse.SUPPRESS)
    add_report_options(demo, out_required=False)
    demo.set_defaults(func=cmd_demo)

    plan = command("plan", "expand a study without training: trials per experiment, "
                   "technique and fraction, GPU shares and a GPU-hour estimate")
    plan.add_argument("study", help="study file, or the name of a shipped study "
                      "(search_spaces/studies/NAME.yaml)")
    plan.add_argument("--json", action="store_true",
                      help='print {"study", "trials": [...], "gpu_hours"} as one JSON object')
    plan.set_defaults(func=cmd_plan)

    launch = command("launch", "run a study's trials with Ray Tune (Ctrl-C pauses; "
                     "`study resume` continues)")
    launch.add_argument("study", help="study file, or the name of a shipped study "
                        "(search_spaces/studies/NAME.yaml)")
    run_options(launch)
    launch.add_argument("--mode", choices=("grid", "optimize"), default="grid",
                        help="grid: every setting of the study (default); optimize: Optuna "
                        "TPE search of each technique's range per fraction, recorded in "
                        "STORAGE/NAME/optuna.journal (view: optuna-dashboard FILE)")
    launch.add_argument("--budget", type=COUNT, default=20,
                        help="optimize: trials per (technique, fraction) group (default: 20)")
    launch.add_argument("--metric", choices=("dsc_raw", "dsc_pp"), default="dsc_pp",
                        help="optimize: the objective, mean test DSC with post-processing "
                        "(dsc_pp, default, as `study report` selects) or without (dsc_raw)")
    launch.add_argument("--max-concurrent", type=COUNT, default=2,
                        help="optimize: trials running at once per group (default: 2)")
    launch.add_argument("--prune", action="store_true",
                        help="optimize: stop trials early whose validation DSC trails (Ray "
                        "Tune's ASHA; needs training.validate_every)")
    launch.set_defaults(func=cmd_launch)

    resume = command("resume", "continue an interrupted study: unfinished trials from their "
                     "last checkpoint, failed ones again")
    resume.add_argument("study", help=STUDY_HELP)
    storage(resume)
    ray_options(resume)
    resume.set_defaults(func=cmd_resume)

    status = command("status", "trial counts per group, running trials and failure reasons "
                     "(exit 1 when trials failed)")
    status.add_argument("study", help=STUDY_HELP)
    storage(status)
    status.add_argument("--json", action="store_true",
                        help="print counts, failures and heartbeats as one JSON object")
    status.set_defaults(func=cmd_status)

    report = command("report", "write a study's tables (md, tex, html, csv) and figures "
                     "(png, svg)")
    report.add_argument("study", help=STUDY_HELP)
    storage(report)
    add_report_options(report, out_required=False)
    report.set_defaults(func=cmd_report)

    compact = command("compact", "merge a study's finished trials' result files into a few "
                      "large Parquet files (atomic, safe to interrupt, idempotent)")
    compact.add_argument("study", help=STUDY_HELP)
    storage(compact)
    compact.set_defaults(func=cmd_compact)

    data = command("data", "dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    data_check = data_commands.add_parser(
        "check", help="check every case of a dataset folder; list all problems, exit 1 if any",
        parents=[common])
    data_check.add_argument("root", help="the dataset folder")
    data_check.add_argument("--layout", required=True,
                            help="dataset id: brats, atlas, kits19, btcv, promise12, msd-brain, "
                            "msd-prostate, msd-pancreas, msd-spleen, a synthetic-* preset; or "
                            "nnunet / msd: an nnU-Net v2 raw or Decathlon task folder read as "
                            "its dataset.json declares it")
    data_check.add_argument("--figures", default=None, metavar="DIR",
                            help="also write the intensity histogram of each class per channel "
                            "(001 Fig. 10) and the voxels per class (001 Fig. 11) of the cases "
                            "read without a problem into DIR, as CSV, PNG and SVG")
    data_check.set_defaults(func=cmd_data_check)

    figures = command("figures", "figures of the papers that need no study")
    figure_commands = figures.add_subparsers(dest="figures_command", required=True)
    losses = figure_commands.add_parser(
        "losses", help="every technique's loss and its gradient vs the true-class logit "
        "(000 Fig. 1, 001 Fig. 9) as CSV, PNG and SVG; prints the files", parents=[common])
    losses.add_argument("folder", help="where to write the files")
    losses.set_defaults(func=cmd_figures_losses)
    return parser


def _interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C outside Tune's graceful stop left: counts when the study can be read."""
    if not hasattr(args, "storage") or not hasattr(args, "study") or args.command == "plan":
        return "interrupted"
    try:
        from study.progress import Interrupted
        from study.stored_plan import Plan, pending_trials, study_uri

        name = study_name(args.study)
        storage = _storage(args.storage)
        uri = study_uri(storage, name)
        plan = Plan.load(uri)
        left = len(pending_trials(plan, uri))
        return str(Interrupted(name, storage, len(plan.trials) - left, left))
    except Exception:
        return "interrupted"


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors are one line on stderr (exit 2, ``--debug``: traceback),
    Ctrl-C exits 130 saying how to continue."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        return cmd_version(args)
    if args.command is None:
        parser.error("a command is required (study --help lists them)")
    try:
        return args.func(args)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before Tune ran
        print(f"study: {_interrupted(args)}", file=sys.stderr, flush=True)
        return INTERRUPTED
    except Exception as error:
        from study.progress import Interrupted  # raised by launches only: imported when needed

        if isinstance(error, Interrupted):
            print(f"study: {error}", file=sys.stderr, flush=True)
            return INTERRUPTED
        if args.debug:
            raise
        text = (str(error).strip() or type(error).__name__).splitlines()
        known = isinstance(error, (ValueError, OSError, LookupError))
        hint = "" if known else f" ({type(error).__name__}; --debug shows the traceback)"
        print(f"study: error: {text[0]}{hint}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
