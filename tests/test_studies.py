"""The shipped studies expand to the papers' experiments."""

from __future__ import annotations

from pathlib import Path

from study.spec import load_study
from study.trials import expand

# 000 Table IV (BraTS 5 %, DeepMedic), in the paper's row order; the extracted table lists
# "ε = 1e-6 l = 10" and mixup "m = 0.8" twice, an artefact: each setting is one trial.
TABLE_IV = (
    [("vanilla", "—")]
    + [("asym_large_margin", f"m = {m}") for m in ("0.2", "0.5", "1", "1.5", "2", "3")]
    + [("asym_focal", f"γ = {g}") for g in ("0.5", "1", "1.5", "2", "3", "4")]
    + [("asym_adversarial", f"ε = {e} l = {ell}") for e, ell in (
        ("1e-5", "2.5"), ("1e-5", "5"), ("1e-5", "10"), ("1e-5", "15"), ("1e-5", "20"),
        ("1e-4", "10"), ("1e-6", "10"))]
    + [("asym_mixup", f"m = {m}") for m in ("0.1", "0.15", "0.2", "0.25", "0.3", "0.4", "0.8")]
)


def test_paper_brats_5pct_is_table_iv():
    """paper-brats-5pct expands to exactly the 27 settings of 000 Table IV, BraTS at 5 %,
    DeepMedic, with asymmetric mixup's Beta alpha = 1 (000 Table I)."""
    trials = expand(load_study("search_spaces/studies/paper-brats-5pct.yaml"))
    assert [(t.config["technique"], t.param_label) for t in trials] == TABLE_IV
    assert {t.config["fraction"] for t in trials} == {0.05}
    assert {(t.config["model"]["name"], t.config["model"]["preset"]) for t in trials} == {
        ("deepmedic", "paper")}
    assert all(t.config["hp"]["mixup_alpha"] == 1.0 for t in trials
               if t.config["technique"] == "asym_mixup")


def test_dmc_study_is_003_table_1_grid():
    """dmc-tau-nu: the five (tau, nu) pairs of 003 Table 1 plus vanilla, 2 fractions x 3
    seeds."""
    trials = expand(load_study("search_spaces/studies/dmc-tau-nu.yaml"))
    pairs = {(t.config["hp"]["tau"], t.config["hp"]["nu"]) for t in trials
             if t.config["technique"] == "margin_calibration"}
    assert pairs == {(1, 10), (1, 1), (10, 1), (10, 0.1), (10, 0.01)}
    assert len(trials) == 6 * 2 * 3


def test_paper_full_covers_001_datasets_fractions_and_seeds():
    """paper-full: BraTS 5-50 % and ATLAS 30-100 % with DeepMedic, KiTS 10-100 % with the
    U-Net; vanilla + every asymmetric technique's grid (35 settings); 3 seeds: 1,050 trials,
    all distinct."""
    from study.spec import load_studies

    specs = load_studies("search_spaces/studies/paper-full.yaml")
    assert [(s.dataset.name, s.model, s.fractions) for s in specs] == [
        ("brats", "deepmedic", (0.05, 0.1, 0.2, 0.5)),
        ("atlas", "deepmedic", (0.3, 0.5, 1.0)),
        ("kits19", "unet", (0.1, 0.5, 1.0))]
    trials = [t for s in specs for t in expand(s)]
    assert len(trials) == len({t.trial_id for t in trials}) == 10 * 35 * 3
    assert {s.name for s in specs} == {"paper-full"} and all(s.seeds == (0, 1, 2) for s in specs)


def test_experiment_errors_name_the_entry(tmp_path):
    """An error inside `experiments[i]` names that entry; a per-entry name is refused."""
    import pytest

    from study.cli import _dataset_roots
    from study.spec import SpecError, load_studies

    text = Path("search_spaces/studies/paper-full.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("name: atlas,", "name: atlass,"))
    with pytest.raises(SpecError, match=r"experiments\[1\].dataset.name: expected one of"):
        load_studies(bad)
    bad.write_text(text.replace("  - dataset: {name: atlas",
                                "  - name: x\n    dataset: {name: atlas"))
    with pytest.raises(SpecError, match=r"experiments\[1\].name: the study's name is set once"):
        load_studies(bad)
    specs = load_studies("search_spaces/studies/paper-full.yaml")
    roots = _dataset_roots(specs, ["kits19=/mnt/kits"])
    assert roots == {"brats": "/data/brats2017", "atlas": "/data/atlas", "kits19": "/mnt/kits"}
    with pytest.raises(SpecError, match="write NAME=PATH"):
        _dataset_roots(specs, ["/mnt/x"])
    with pytest.raises(SpecError, match="'btcv' is not a dataset of the study"):
        _dataset_roots(specs, ["btcv=/mnt/x"])
