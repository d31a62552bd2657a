"""``study``: run, resume, inspect and report hyperparameter sensitivity studies.

    study demo                              the embedded default, locally on the CPU
    study plan FILE|NAME [--json]           the trials a study will run (nothing is trained)
    study launch FILE|NAME [--storage URI] [--address auto]
    study resume NAME [--storage URI]
    study status NAME [--storage URI]
    study report NAME [--storage URI] [--out DIR]
    study data check ROOT --layout NAME     validate a dataset folder (every problem listed)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

STUDIES_DIR = Path(__file__).resolve().parent.parent / "search_spaces" / "studies"
DEMO_STUDY = STUDIES_DIR / "demo.yaml"
DEFAULT_STORAGE = "study-results"


def _say(message: str) -> None:
    print(message, flush=True)


def _dataset_roots(specs, overrides: list[str] | None) -> dict[str, str]:
    """Each real dataset's folder: the study's ``root``, replaced by ``--dataset-root``
    (``NAME=PATH``, or just ``PATH`` for a single-dataset study)."""
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
    return roots


def study_file(given: str) -> Path:
    """A study file's path, or the file of a shipped study named ``given``
    (``search_spaces/studies/<name>.yaml``)."""
    from study.spec import SpecError

    path = Path(given)
    if path.is_file():
        return path
    shipped = STUDIES_DIR / f"{given}.yaml"
    if "/" not in given and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.yaml")))
    raise SpecError(f"{given}: no such study file, nor a shipped study of that name "
                    f"(shipped: {names})")


def _same(specs, field: str) -> int:
    """A run option every experiment of the study must share (``training.<field>``)."""
    from study.spec import SpecError

    values = {getattr(s.training, field) for s in specs}
    if len(values) > 1:
        raise SpecError(f"{specs[0].source}: training.{field}: the experiments disagree "
                        f"({sorted(values)}); it is a run option shared by the whole study")
    return values.pop()


def _launch(study_file: str | Path, args: argparse.Namespace) -> tuple[int, str]:
    """Run a study file's trials (grid or optimize mode); return (exit status, study name)."""
    from study import tune
    from study.spec import SpecError, load_studies
    from study.trial import RunOptions
    from study.trials import expand

    specs = load_studies(study_file)
    name = specs[0].name
    trials = [trial for spec in specs for trial in expand(spec)]
    if len({t.trial_id for t in trials}) != len(trials):
        raise SpecError(f"{study_file}: experiments: two experiments describe the same trial")
    storage = str(Path(args.storage).resolve()) if "://" not in args.storage else args.storage
    data_dir = args.data_dir or str(Path(storage if "://" not in storage else ".") / "data")
    options = RunOptions(
        data_dir=str(Path(data_dir).resolve()),
        results_uri=f"{tune.study_uri(storage, name)}/results",
        dataset_roots=_dataset_roots(specs, args.dataset_root),
        device=args.device,
        checkpoint_every=_same(specs, "checkpoint_every"),
        validate_every=_same(specs, "validate_every"),
        compile=args.compile,
        threads=max(1, int(args.cpus_per_trial)),
    )
    if getattr(args, "mode", "grid") == "optimize":
        from study.optimize import optimize

        for spec in specs:
            best = optimize(spec, storage, options, budget=args.budget, metric=args.metric,
                            max_concurrent=args.max_concurrent,
                            cpus_per_trial=args.cpus_per_trial, gpus=args.gpus_per_trial,
                            address=args.address, num_cpus=args.num_cpus,
                            max_failures=args.max_failures, printer=_say)
            _say(f"{spec.dataset.name}: {len(best)} group(s) optimised")
        _say(f"best settings: {tune.study_uri(storage, name)}/optimize/*.json")
        return 0, name
    for spec in specs:
        _say(f"study {name}: {spec.dataset.name} with {spec.model}-{spec.model_preset}: "
             f"{len(spec.fractions)} fraction(s) x "
             f"{sum(len(t.settings) for t in spec.techniques)} setting(s) x "
             f"{len(spec.seeds)} seed(s) from {study_file}")
    missing = tune.launch(trials, storage, options, cpus_per_trial=args.cpus_per_trial,
                          gpus=args.gpus_per_trial, address=args.address,
                          num_cpus=args.num_cpus, max_failures=args.max_failures, printer=_say)
    return _finish(name, storage, missing), name


def _finish(name: str, storage: str, missing: list) -> int:
    if missing:
        _say(f"{len(missing)} trial(s) have no results (failed): `study status {name}` "
             "shows why; `study resume` runs them again")
    _say(f"results: {storage}/{name}/results (Parquet tables `cases` and `trials`)")
    return 1 if missing else 0


def _report(name: str, storage: str, out: str | None, figures: bool = True,
            printer=None, select_on: str = "test") -> Path:
    """Write the study's report (tables, figures, index.md/index.html); return index.md.
    Damaged or malformed result files are skipped and listed in the report."""
    import analysis
    from study import tune

    uri = tune.study_uri(storage, name)
    plan = tune.Plan.load(uri)
    out_dir = Path(out or (Path(uri) / "report" if "://" not in uri else f"{name}-report"))
    results = analysis.load_results(f"{uri}/results", errors="skip")
    # Only this launch's trials: results of an earlier version of the study file (or of an
    # Optuna search) stay on disk but must not be averaged into its tables.
    results = results.restrict({t["trial_id"] for t in plan.trials})
    finished = results.finished_ids()
    pending = [t for t in plan.trials if t["trial_id"] not in finished]
    paths = analysis.write_report(results, out_dir, title=f"Study {name}",
                                  missing=len(pending), pending=pending, figures=figures,
                                  progress=printer, select_on=select_on)
    return paths[-1]


def cmd_demo(args: argparse.Namespace) -> int:
    start = time.monotonic()
    status, name = _launch(args.study, args)
    index = _report(name, args.storage, args.out)
    _say(index.read_text(encoding="utf-8"))
    _say(f"demo finished in {time.monotonic() - start:.0f} s; report: {index}")
    return status


def cmd_launch(args: argparse.Namespace) -> int:
    return _launch(study_file(args.file), args)[0]


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from study.plan import plan, summary
    from study.spec import load_studies

    path = study_file(args.file)
    planned = plan(load_studies(path))
    if args.json:
        print(json.dumps(planned, ensure_ascii=False))
    else:
        _say(summary(planned, path))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from study import tune

    missing = tune.resume(args.name, args.storage, address=args.address, num_cpus=args.num_cpus,
                          max_failures=args.max_failures, printer=_say)
    return _finish(args.name, args.storage, missing)


def cmd_status(args: argparse.Namespace) -> int:
    from study import tune
    from study.status import status_table

    uri = tune.study_uri(args.storage, args.name)
    table, failures = status_table(tune.Plan.load(uri), f"{uri}/results")
    _say(table.to_string(index=False))
    for trial_id, error in failures:
        _say(f"failed {trial_id}: {error}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from analysis import ResultsError

    try:
        index = _report(args.name, args.storage, args.out, figures=not args.no_figures,
                        printer=_say, select_on=args.select_on)
    except (ResultsError, ValueError) as error:
        print(f"study: error: {error}", file=sys.stderr)
        return 2
    _say(f"report: {index} (and {index.with_suffix('.html').name}; its \"What is missing\" "
         "section lists what could not be built yet)")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from study.data import check

    return check.run(args.root, args.layout, printer=_say)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def storage(p):
        p.add_argument("--storage", default=DEFAULT_STORAGE,
                       help="folder or URI (s3://...) holding studies (default: %(default)s)")

    def ray_options(p):
        p.add_argument("--address", default=None,
                       help="Ray cluster address ('auto' on a cluster); default: local Ray")
        p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
        p.add_argument("--max-failures", type=int, default=1,
                       help="retries of a failed trial (from its last checkpoint)")

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
        p.add_argument("--device", default="auto", help="auto, cpu or cuda")
        p.add_argument("--cpus-per-trial", type=float, default=1)
        p.add_argument("--gpus-per-trial", type=float, default=None,
                       help="GPU share per trial (default: by model when Ray sees GPUs: "
                       "DeepMedic 0.25, paper U-Net 1, tiny models 0.125; else 0)")

    demo = commands.add_parser("demo", help="run the embedded demo study and write its report")
    run_options(demo)
    demo.add_argument("--study", default=str(DEMO_STUDY), help=argparse.SUPPRESS)
    demo.add_argument("--out", default=None, help="report folder (default: in the study)")
    demo.set_defaults(func=cmd_demo)

    plan = commands.add_parser(
        "plan", help="expand a study without training: trials per experiment, technique and "
        "fraction, GPU shares and a GPU-hour estimate")
    plan.add_argument("file", help="study file, or the name of a shipped study "
                      "(search_spaces/studies/NAME.yaml)")
    plan.add_argument("--json", action="store_true",
                      help='print {"study", "trials": [...], "gpu_hours"} as one JSON object')
    plan.set_defaults(func=cmd_plan)

    launch = commands.add_parser("launch", help="run a study's trials with Ray Tune")
    launch.add_argument("file", help="study file, or the name of a shipped study "
                        "(search_spaces/studies/NAME.yaml)")
    run_options(launch)
    launch.add_argument("--mode", choices=("grid", "optimize"), default="grid",
                        help="grid: every setting of the study; optimize: Optuna TPE search "
                        "of each technique's range per fraction")
    launch.add_argument("--budget", type=int, default=20, help="optimize: trials per group")
    launch.add_argument("--metric", choices=("dsc_raw", "dsc_pp"), default="dsc_raw",
                        help="optimize: mean test DSC without / with post-processing")
    launch.add_argument("--max-concurrent", type=int, default=2,
                        help="optimize: trials running at once per group")
    launch.set_defaults(func=cmd_launch)

    resume = commands.add_parser("resume", help="continue an interrupted study")
    resume.add_argument("name")
    storage(resume)
    ray_options(resume)
    resume.set_defaults(func=cmd_resume)

    status = commands.add_parser("status", help="trial counts and failures of a study")
    status.add_argument("name")
    storage(status)
    status.set_defaults(func=cmd_status)

    report = commands.add_parser(
        "report", help="write a study's tables (md, tex, html, csv) and figures (png, svg)")
    report.add_argument("name")
    storage(report)
    report.add_argument("--out", default=None, help="report folder (default: in the study)")
    report.add_argument("--no-figures", action="store_true", help="tables only (faster)")
    report.add_argument("--select-on", choices=("test", "validation"), default="test",
                        help="split that chooses each technique's best setting: the test cases "
                        "(the papers' practice, the default) or the validation cases held out "
                        "of the training pool (dataset.validation_cases); the tables always "
                        "report test metrics")
    report.set_defaults(func=cmd_report)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    data_check = data_commands.add_parser(
        "check", help="check every case of a dataset folder; list all problems, exit 1 if any")
    data_check.add_argument("root", help="the dataset folder")
    data_check.add_argument("--layout", required=True,
                            help="dataset id: brats, atlas, kits19, btcv, promise12, msd-brain, "
                            "msd-prostate, msd-pancreas, msd-spleen, or a synthetic-* preset")
    data_check.set_defaults(func=cmd_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = _parser().parse_args(argv)
    from study.data.loader import DataError
    from study.spec import SpecError

    try:
        return args.func(args)
    except (SpecError, DataError, FileNotFoundError) as error:
        print(f"study: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
