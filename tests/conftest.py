"""Shared fixtures: one local Ray instance per test session, tiny studies, scratch storage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TINY_STUDY = TESTS / "data" / "tiny-study.yaml"

# Ray on loopback only, no usage stats, no token file in the real home (tests never reach the
# network or the user's Ray credentials).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.hookimpl(tryfirst=True)  # before xdist's hook, which reads the group markers
def pytest_collection_modifyitems(items) -> None:
    """Tests that start Ray run on one xdist worker (``--dist loadgroup``): one local Ray at a
    time, started once by ``ray_session``, instead of one per worker on a 2-core machine."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def ray_session():
    """A 2-CPU local Ray started once for the whole session."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_study_path() -> Path:
    return TINY_STUDY


@pytest.fixture(scope="session")
def tiny_spec():
    from study.spec import load_study

    return load_study(TINY_STUDY)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Synthetic datasets generated once per session (generation is deterministic)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def run_options(tmp_path, data_dir):
    from study.run_options import RunOptions

    return RunOptions(data_dir=str(data_dir), results_uri=str(tmp_path / "results"), threads=1)


@pytest.fixture(scope="session")
def tiny_data(tiny_spec, data_dir):
    """The tiny study's dataset: (info, train cases, test cases)."""
    from study.data import loader, splits
    from study.data.inline import dataset_info
    from study.expand import expand
    from study.run_options import RunOptions
    from study.trial import dataset_root

    options = RunOptions(data_dir=str(data_dir), results_uri="")
    config = expand(tiny_spec)[0].config
    root = dataset_root(config, options)
    info = dataset_info(config.dataset, root)
    train, test = splits.split(loader.list_cases(info, root), config.dataset.test_cases,
                               config.fraction)
    return (info, [loader.load_case(info, root, c) for c in train],
            [loader.load_case(info, root, c) for c in test])
