"""The shipped paper studies run the papers' experiments, checked setting by setting against
tables transcribed here from 000 Tables I-IV and 003 Table 1 (not read from the study files).

Each check goes through ``study plan --json``, the public expansion of a study."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from study.cli import main

ROOT = Path(__file__).resolve().parent.parent
SEEDS = 3
DEEPMEDIC = ([37, 37, 37], [21, 21, 21])


def _plan(name: str, capsys) -> dict:
    assert main(["plan", name, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _per_fraction(table: dict[str, list], fractions: list[float]) -> dict:
    """{technique: per-fraction hyperparameter lists} -> {(technique, fraction): [hp, ...]}."""
    return {(t, f): [dict(hp) for hp in (points[i] if isinstance(points[i], list)
                                         else [points[i]])]
            for t, points in table.items() for i, f in enumerate(fractions)}


def _settings(planned: dict) -> dict:
    """{(technique, fraction): [hyperparameters of each distinct setting]} of a plan, with the
    variant experiments keyed by their label."""
    out: dict = {}
    seeds = Counter()
    for t in planned["trials"]:
        key = (f"{t['technique']}: {t['variant']}" if t["variant"] else t["technique"],
               t["fraction"])
        seeds[(key, json.dumps(t["hyperparameters"], sort_keys=True))] += 1
        if t["hyperparameters"] not in out.setdefault(key, []):
            out[key].append(t["hyperparameters"])
    assert set(seeds.values()) == {SEEDS}, "every setting runs with every seed once"
    return out


# 000 Table I (BRATS, DeepMedic) at 5 / 10 / 20 / 50 %.
BRATS_FRACTIONS = [0.05, 0.1, 0.2, 0.5]
BRATS = {
    "vanilla": [{}] * 4,
    "vanilla: 80 % tumour": [{}] * 4,
    "dsc": [{}] * 4,
    "f_beta": [[{"beta": 2.0}, {"beta": 4.0}, {"beta": 8.0}]] * 4,
    "large_margin": [{"m": m} for m in (1, 0.2, 1, 1)],
    "asym_large_margin": [{"m": m} for m in (1, 0.2, 1, 1)],
    "focal": [{"gamma": g} for g in (2, 4, 4, 4)],
    "asym_focal": [{"gamma": g} for g in (2, 4, 4, 4)],
    "adversarial": [{"eps": 1e-5, "l": ell} for ell in (10, 10, 10, 20)],
    "asym_adversarial": [{"eps": 1e-5, "l": ell} for ell in (10, 10, 10, 20)],
    "mixup": [{"mixup_alpha": 0.2}] * 4,
    "asym_mixup": [{"mixup_m": m, "mixup_alpha": 1} for m in (0.2, 0.2, 0.2, 0.1)],
    "combination": [{"m": m, "gamma": g, "eps": 1e-5, "l": ell, "mixup_alpha": 0.2}
                    for m, g, ell in ((1, 1.5, 10), (0, 2, 10), (0, 2, 10), (0, 4, 20))],
    "asym_combination": [{"m": m, "gamma": g, "eps": 1e-5, "l": ell, "mixup_m": mm,
                          "mixup_alpha": 1}
                         for m, g, ell, mm in ((1, 1.5, 10, 0.2), (0, 2, 10, 0.2),
                                               (0, 2, 10, 0.2), (0, 4, 20, 0.1))],
}

# 000 Table II (ATLAS, DeepMedic) at 30 / 50 / 100 %; "asymmetric augmentation" takes the
# combination rows' background augmentation probability.
ATLAS_FRACTIONS = [0.3, 0.5, 1.0]
ATLAS = {
    "vanilla": [{}] * 3,
    "vanilla: w/o augmentation": [{}] * 3,
    "asym_augmentation": [{"bg_aug_prob": p} for p in (0.5, 0.5, 0.25)],
    "large_margin": [{"m": m} for m in (0.1, 3, 2)],
    "asym_large_margin": [{"m": m} for m in (0.1, 3, 2)],
    "focal": [{"gamma": 4}] * 3,
    "asym_focal": [{"gamma": 4}] * 3,
    "adversarial": [{"eps": 1e-5, "l": 10}] * 3,
    "asym_adversarial": [{"eps": 1e-5, "l": 10}] * 3,
    "mixup": [{"mixup_alpha": 0.2}] * 3,
    "asym_mixup": [{"mixup_m": m, "mixup_alpha": 1} for m in (0.8, 0.8, 0.2)],
    "combination": [{"m": m, "gamma": g, "eps": 1e-5, "l": 10, "mixup_alpha": 0.2}
                    for m, g in ((0.1, 4), (0, 3), (1, 2))],
    "asym_combination": [
        {"bg_aug_prob": 0.5, "m": 0.1, "gamma": 4, "eps": 1e-5, "l": 10},
        {"bg_aug_prob": 0.5, "m": 0, "gamma": 3, "eps": 1e-5, "l": 10},
        {"bg_aug_prob": 0.25, "m": 1, "gamma": 2, "eps": 1e-5, "l": 10, "mixup_m": 0.2,
         "mixup_alpha": 1}],
}

# 000 Table III (KiTS, 3D U-Net) at 10 / 50 / 100 %; the combinations: margin, focal and
# background augmentation only.
KITS_FRACTIONS = [0.1, 0.5, 1.0]
KITS = {
    "vanilla": [{}] * 3,
    "vanilla: w/o augmentation": [{}] * 3,
    "asym_augmentation": [{"bg_aug_prob": p} for p in (0, 0, 0.5)],
    "large_margin": [{"m": m} for m in (0.8, 0.6, 0.8)],
    "asym_large_margin": [{"m": m} for m in (0.8, 0.6, 0.8)],
    "focal": [{"gamma": 6}] * 3,
    "asym_focal": [{"gamma": 6}] * 3,
    "adversarial": [{"eps": 1e-5, "l": ell} for ell in (100, 50, 50)],
    "asym_adversarial": [{"eps": 1e-5, "l": ell} for ell in (100, 50, 50)],
    "mixup": [{"mixup_alpha": 0.2}] * 3,
    "asym_mixup": [{"mixup_m": m, "mixup_alpha": 1} for m in (0.05, 0.05, 0.2)],
    "combination": [{"m": m, "gamma": g} for m, g in ((0.8, 4), (0.2, 6), (0.8, 2))],
    "asym_combination": [{"bg_aug_prob": p, "m": m, "gamma": g}
                         for p, m, g in ((0, 0.8, 4), (0, 0.2, 6), (0.5, 0.8, 2))],
}


@pytest.mark.parametrize(("name", "table", "fractions"), [
    ("paper-brats", BRATS, BRATS_FRACTIONS),
    ("paper-atlas", ATLAS, ATLAS_FRACTIONS),
    ("paper-kits", KITS, KITS_FRACTIONS),
])
def test_paper_study_runs_000_tables_i_to_iii(name, table, fractions, capsys):
    """Every (technique, fraction) of the study has exactly the setting(s) of 000 Tables
    I-III (values and counts), every setting with 3 seeds; nothing else is run."""
    planned = _plan(name, capsys)
    expected = _per_fraction(table, fractions)
    got = _settings(planned)
    assert set(got) == set(expected)
    for key, settings in expected.items():
        want = sorted(json.dumps({k: float(v) for k, v in s.items()}, sort_keys=True)
                      for s in settings)
        assert sorted(json.dumps(s, sort_keys=True) for s in got[key]) == want, key
    assert len(planned["trials"]) == sum(len(v) for v in expected.values()) * SEEDS
    assert planned["gpu_hours"] == pytest.approx(sum(t["gpu_hours"] for t in planned["trials"]))


def test_paper_studies_run_each_experiments_regime(capsys):
    """001 §V-A: BraTS - DeepMedic basic, no augmentation (asymmetric augmentation gates the
    DeepMedic regime); ATLAS - DeepMedic default with the DeepMedic regime, and the w/o
    augmentation baseline without; KiTS - U-Net, nnU-Net regime, nnU-Net sampling, mirroring.
    DeepMedic reads 37^3 segments labelling 21^3 voxels; the reference code's update rule."""
    regimes = {}
    for name in ("paper-brats", "paper-atlas", "paper-kits"):
        for t in _plan(name, capsys)["trials"]:
            variant = t["variant"] is not None
            regimes.setdefault((name, t["technique"], variant), set()).add(
                (t["model"], t["preset"], t["augmentation"], t["update"]))
            assert t["iterations"] == (250000 if t["model"] == "unet" else 70000)
            if t["model"] == "deepmedic":
                assert (t["input_patch"], t["output_patch"]) == DEEPMEDIC
                assert (t["batch_size"], t["sampling"], t["mirroring"]) == (10, "balanced", False)
            else:
                assert t["input_patch"] == t["output_patch"] == [96, 160, 160]
                assert (t["batch_size"], t["sampling"], t["fg_fraction"], t["mirroring"]) == (
                    2, "nnunet", 0.33, True)
    for (name, technique, variant), values in regimes.items():
        model, preset, augmentation, update = values.pop()
        assert not values and update == "sequential"
        if name == "paper-brats":
            assert (preset, augmentation) == (
                "basic", "deepmedic" if technique == "asym_augmentation" else None)
        elif name == "paper-atlas":
            assert (preset, augmentation) == ("default", None if variant else "deepmedic")
        else:
            assert (model, augmentation) == ("unet", None if variant else "nnunet")


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


def test_paper_brats_5pct_is_table_iv(capsys):
    """paper-brats-5pct: exactly the 27 settings of 000 Table IV at BraTS 5 %, DeepMedic
    basic on 37^3 -> 21^3 segments, asymmetric mixup's Beta alpha = 1 (000 Table I)."""
    trials = _plan("paper-brats-5pct", capsys)["trials"]
    rows = list(dict.fromkeys((t["technique"], t["param_label"]) for t in trials))
    assert rows == TABLE_IV
    assert len(trials) == 27 * SEEDS
    assert {(t["fraction"], t["dataset"], t["preset"], t["augmentation"]) for t in trials} == {
        (0.05, "brats", "basic", None)}
    assert {(tuple(t["input_patch"]), tuple(t["output_patch"])) for t in trials} == {
        ((37, 37, 37), (21, 21, 21))}
    assert all(t["hyperparameters"]["mixup_alpha"] == 1.0 for t in trials
               if t["technique"] == "asym_mixup")


def test_dmc_study_is_003_table_1_grid(capsys):
    """dmc-tau-nu: the five (tau, nu) pairs of 003 Table 1 plus vanilla, 2 fractions x 3
    seeds."""
    trials = _plan("dmc-tau-nu", capsys)["trials"]
    pairs = Counter((t["hyperparameters"]["tau"], t["hyperparameters"]["nu"]) for t in trials
                    if t["technique"] == "margin_calibration")
    assert pairs == {pair: 2 * SEEDS for pair in ((1, 10), (1, 1), (10, 1), (10, 0.1),
                                                  (10, 0.01))}
    assert len(trials) == 6 * 2 * SEEDS


def test_plan_contract_keys_and_summary(capsys):
    """``study plan --json`` carries the public keys; hyperparameters only those the technique
    uses; the readable summary names the experiments and labels its GPU-hours an estimate."""
    planned = _plan("demo", capsys)
    assert set(planned) == {"study", "trials", "gpu_hours"} and planned["study"] == "demo"
    keys = {"trial_id", "dataset", "fraction", "seed", "technique", "model", "preset",
            "hyperparameters", "input_patch", "output_patch", "augmentation", "update",
            "iterations"}
    for t in planned["trials"]:
        assert keys <= set(t)
        assert set(t["hyperparameters"]) == ({"gamma"} if t["technique"] == "asym_focal"
                                             else set())
    assert main(["plan", "paper-atlas"]) == 0
    text = capsys.readouterr().out
    assert "117 trials" in text and "estimate" in text
    assert "atlas - deepmedic/default, deepmedic, segments 37x37x37 -> 21x21x21" in text


def test_plan_reads_no_data_and_starts_no_ray(tmp_path):
    """Planning a study works without its data folder (/data/kits19, absent here) and imports
    no Ray."""
    code = ("import sys; from study.cli import main; rc = main(['plan', 'paper-kits', "
            "'--json']); assert 'ray' not in sys.modules, 'ray imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["study"] == "paper-kits"


def test_experiment_errors_name_the_entry(tmp_path, capsys, monkeypatch):
    """An error inside `experiments[i]` names that entry; a per-entry name is refused;
    --dataset-root maps onto the experiments' datasets: a launch looks for the dataset in the
    folder given (made absolute), and stops there, before Ray starts, as it is absent."""
    from study.spec import SpecError, load_studies

    text = (ROOT / "search_spaces/studies/paper-atlas.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("    augmentation: none", "    augmentation: nnunett"))
    with pytest.raises(SpecError, match=r"experiments\[1\].augmentation: expected one of"):
        load_studies(bad)
    bad.write_text(text.replace("  - variant: w/o augmentation",
                                "  - name: x\n    variant: w/o augmentation"))
    with pytest.raises(SpecError, match=r"experiments\[1\].name: the study's name is set once"):
        load_studies(bad)
    monkeypatch.chdir(tmp_path)
    launch = ["launch", "paper-atlas", "--storage", str(tmp_path / "storage")]
    assert main([*launch, "--dataset-root", "atlas=mnt/atlas"]) == 2
    root = tmp_path.resolve() / "mnt" / "atlas"
    assert capsys.readouterr().err == f"study: error: {root}: dataset folder not found\n"
    assert main([*launch, "--dataset-root", "btcv=/mnt/x"]) == 2
    assert "'btcv' is not a dataset of the study (['atlas'])" in capsys.readouterr().err
    assert not (tmp_path / "storage").exists()


def test_paper_abdomen_is_000_table_v(capsys):
    """paper-abdomen: 000 §F / Table V - BTCV, 25 % (5 of 20 training cases, 10 test),
    DeepMedic basic without augmentation, CE vs symmetric vs asymmetric focal loss at γ = 4,
    DeepMedic's per-class sampling, 3 seeds; r marks the organs 4, 5, 8-13 (000 §F)."""
    from study.data.registry import DATASETS

    planned = _plan("paper-abdomen", capsys)
    assert _settings(planned) == {("vanilla", 0.25): [{}], ("focal", 0.25): [{"gamma": 4.0}],
                                  ("asym_focal", 0.25): [{"gamma": 4.0}]}
    assert len(planned["trials"]) == 3 * SEEDS
    for t in planned["trials"]:
        assert (t["dataset"], t["model"], t["preset"], t["augmentation"]) == (
            "btcv", "deepmedic", "basic", None)
        assert (t["input_patch"], t["output_patch"]) == DEEPMEDIC
        assert (t["iterations"], t["pretrain"], t["batch_size"], t["sampling"],
                t["fg_fraction"]) == (70000, 0, 10, "per_class", 0.5)
    info = DATASETS["btcv"]
    assert info.test_cases == 10 and len(info.classes) == 14
    assert [k for k, r in enumerate(info.rare_vector()) if r] == [4, 5, 8, 9, 10, 11, 12, 13]


def test_paper_promise12_is_004_table_2(capsys):
    """paper-promise12: 004 Table 2's losses - re-weighted CE, squared DSC, Jaccard - and
    001 Table II's F2 / F4 / F8 on PROMISE12 with the U-Net, batches of 2, 3 seeds."""
    planned = _plan("paper-promise12", capsys)
    assert _settings(planned) == {
        ("reweighted_ce", 1.0): [{}], ("dsc_squared", 1.0): [{}], ("jaccard", 1.0): [{}],
        ("f_beta", 1.0): [{"beta": 2.0}, {"beta": 4.0}, {"beta": 8.0}]}
    assert len(planned["trials"]) == 6 * SEEDS
    for t in planned["trials"]:
        assert (t["dataset"], t["model"], t["preset"], t["augmentation"]) == (
            "promise12", "unet", "paper", None)
        assert t["input_patch"] == t["output_patch"] == [64, 96, 96]
        assert (t["iterations"], t["pretrain"], t["batch_size"]) == (40000, 0, 2)


def test_plan_shows_pretraining_and_counts_it_as_one_pass(tmp_path, capsys):
    """`training.pretrain` (003 §4) appears in the plan; its iterations cost one pass each
    (plain CE), the rest the technique's passes."""
    text = (ROOT / "search_spaces/studies/paper-brats-5pct.yaml").read_text()
    study = tmp_path / "pre.yaml"
    study.write_text(text.replace("  iterations: 70000\n",
                                  "  iterations: 70000\n  pretrain: 20000\n"))
    base = {(t["technique"], t["param_label"], t["seed"]): t
            for t in _plan(str(ROOT / "search_spaces/studies/paper-brats-5pct.yaml"),
                           capsys)["trials"]}
    for t in _plan(str(study), capsys)["trials"]:
        before = base[(t["technique"], t["param_label"], t["seed"])]
        assert t["pretrain"] == 20000 and before["pretrain"] == 0
        assert t["trial_id"] != before["trial_id"]
        passes = 3 if t["technique"] == "asym_adversarial" else 1
        passes += t["technique"] == "asym_mixup"
        assert t["gpu_hours"] == pytest.approx(
            before["gpu_hours"] * (20000 + 50000 * passes) / (70000 * passes))
    assert main(["plan", str(study)]) == 0
    assert "70,000 iterations (20,000 of CE pre-training)" in capsys.readouterr().out
