"""Trial expansion and the trial_id contract (docs/ARCHITECTURE.md, "Trial identity")."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from study.expand import Trial, expand, param_label
from study.identity import TrialConfig, canonical_json, trial_id

DEMO = "search_spaces/studies/demo.yaml"
GOLDEN_ID = "0a4c5c4631d66713"  # sha256 of the canonical JSON below, first 16 hex digits


def _ids_in_subprocess(path: str) -> list[str]:
    code = ("import json,sys; from study.spec import load_study; from study.expand import expand;"
            f"print(json.dumps([t.trial_id for t in expand(load_study({path!r}))]))")
    env_hash = {"PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, **env_hash})
    return json.loads(out.stdout)


def test_trial_ids_are_stable_across_processes():
    """The same study file expands to the same ids in another interpreter (other hash seed)."""
    from study.spec import load_study

    here = [t.trial_id for t in expand(load_study(DEMO))]
    assert here == _ids_in_subprocess(DEMO)
    assert len(set(here)) == len(here) == 14


def test_trial_id_ignores_key_order_and_float_spelling():
    """Sorted keys and normalised floats: 1 == 1.0, -0.0 == 0.0, key order irrelevant."""
    a = {"hp": {"gamma": 2.0, "m": -0.0}, "fraction": 0.1 + 0.2}
    b = {"fraction": 0.3, "hp": {"m": 0.0, "gamma": 2.0}}
    assert trial_id(a) == trial_id(b)
    assert canonical_json(a) == '{"fraction":0.3,"hp":{"gamma":2.0,"m":0.0}}'


def test_trial_id_changes_with_any_identity_field(tiny_spec):
    """Changing a hyperparameter, the seed or the budget gives another id."""
    config = expand(tiny_spec)[1].config.to_dict()
    base = trial_id(config)
    for path, value in [(("hp", "gamma"), 3.0), (("seed",), 1),
                        (("training", "iterations"), 5)]:
        changed = json.loads(json.dumps(config))
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert trial_id(changed) != base, path


def test_trial_id_of_a_fixed_config_never_changes():
    """Golden value: changing the canonical form would orphan every stored result."""
    config = {"dataset": {"name": "synthetic-brats", "test_cases": 8}, "fraction": 0.1,
              "hp": {"gamma": 2.0}, "seed": 0, "technique": "asym_focal"}
    assert trial_id(config) == GOLDEN_ID


def test_trial_id_rejects_non_finite_values():
    """NaN has no canonical spelling; it must not silently hash."""
    with pytest.raises(ValueError, match="finite"):
        trial_id({"hp": {"gamma": float("nan")}})


def test_expansion_order_and_labels(tiny_spec):
    """Fraction, then technique in study order, then grid order; labels as the papers print."""
    trials = expand(tiny_spec)
    assert [(t.config.technique, t.param_label) for t in trials] == [
        ("vanilla", "—"), ("asym_focal", "γ = 2")]
    assert param_label({"eps": 1e-5, "l": 10.0}) == "ε = 1e-5 l = 10"
    assert param_label({"mixup_m": 0.2, "mixup_alpha": 1.0}, shown=["mixup_m"]) == "m = 0.2"
    assert param_label({"m": 1.0, "mixup_m": 0.2}) == "m = 1 m_mix = 0.2"
    assert param_label({"tau": 10.0, "nu": 0.01}, shown=[]) == "τ = 10 ν = 0.01"
    assert param_label({"eps": 1e-4, "l": 2.5}) == "ε = 1e-4 l = 2.5"
    assert param_label({"eps": 2.5e-6, "l": 1e6}) == "ε = 2.5e-6 l = 1e6"
    assert all(t.study == "tiny" for t in trials)


def test_pretraining_is_identity_only_when_there_is_some(tiny_spec):
    """`training.pretrain: 0` (the default) leaves every trial id as before; K > 0 (003 §4)
    is part of the identity, one id per K."""
    from study.expand import trial_config

    fraction, technique, hp = tiny_spec.fractions[0], "asym_focal", {"gamma": 2.0}
    base = trial_config(tiny_spec, fraction, technique, hp, 0)
    assert "pretrain" not in base.to_dict()["training"] and base.training.pretrain == 0
    ids = {trial_config(dataclasses.replace(
        tiny_spec, training=dataclasses.replace(tiny_spec.training, pretrain=k)),
        fraction, technique, hp, 0).trial_id for k in (0, 1, 2)}
    assert base.trial_id in ids and len(ids) == 3


ROOT = Path(__file__).resolve().parent.parent
STUDY_FILES = sorted((ROOT / "search_spaces/studies").glob("*.yaml")) + sorted(
    (ROOT / "tests/data").glob("*study.yaml"))


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.name)
def test_typed_config_reproduces_the_canonical_dict_of_every_study(path):
    """For every trial of every shipped and test study, the typed config reads back from its
    canonical dict and writes exactly that dict again: the same id, and the same param."""
    from study.spec import load_studies

    for spec in load_studies(path):
        for trial in expand(spec):
            config = json.loads(canonical_json(trial.config.to_dict()))
            assert TrialConfig.from_dict(config).to_dict() == config
            assert trial_id(config) == trial.config.trial_id == trial.trial_id
            assert Trial.from_param(json.loads(json.dumps(trial.as_param()))) == trial


OWN = {"dataset": {"name": "Dataset508_Id", "test_cases": None, "validation_cases": 2,
                   "layout": "nnunet", "sha256": "ab" * 32,
                   "options": {"roi": "nonzero", "lcc": ["lesion"], "clip": None}},
       "fraction": 0.5, "model": {"name": "unet", "preset": "tiny"}, "technique": "mixup",
       "hp": {"mixup_alpha": 0.2, "mixup_m": 0.5}, "seed": 1,
       "training": {"iterations": 4, "batch_size": 2, "input_patch": [8, 8, 8],
                    "output_patch": [8, 8, 8], "lr": None, "fg_fraction": 1,
                    "sampling": "nnunet", "update": "sequential", "mixup_lambda": "code",
                    "pretrain": 2},
       "augmentation": "nnunet", "inference": {"mirroring": True}}


def test_typed_config_keeps_the_optional_keys_of_the_identity():
    """An own dataset, the update rule, the mixup λ form and CE pre-training round-trip (an
    integer stays an integer: its canonical JSON, and so the id, is unchanged); they read as
    typed, frozen values."""
    config = TrialConfig.from_dict(OWN)
    assert config.to_dict() == OWN and config.trial_id == trial_id(OWN)
    assert canonical_json(config.to_dict()) == canonical_json(OWN)
    assert config.dataset.options is not None and config.dataset.options["lcc"] == ("lesion",)
    assert (config.training.update, config.training.mixup_lambda, config.training.pretrain,
            config.training.input_patch) == ("sequential", "code", 2, (8, 8, 8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.hp["mixup_m"] = 0.1  # type: ignore[index]
    assert hash(config) == hash(TrialConfig.from_dict(json.loads(json.dumps(OWN))))


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.pop("seed"), r"missing key\(s\) \['seed'\]"),
    (lambda c: c.update(study="s"), r"unknown key\(s\) \['study'\]"),
    (lambda c: c["training"].update(patch=[1, 1, 1]), r"training: unknown key\(s\) \['patch'\]"),
    (lambda c: c["dataset"].pop("sha256"), r"dataset \(an own dataset\): missing key\(s\) "
                                           r"\['sha256'\]"),
    (lambda c: c["training"].update(pretrain=0), "training.pretrain: expected a positive"),
    (lambda c: c["training"].update(input_patch=[8, 8]), "input_patch: expected 3 integers"),
    (lambda c: c.update(seed=True), "seed: expected an integer, got True"),
    (lambda c: c["hp"].update(mixup_m="0.5"), "hp.mixup_m: expected a number"),
])
def test_typed_config_rejects_a_malformed_dict_naming_the_key(change, message):
    config = json.loads(json.dumps(OWN))
    change(config)
    with pytest.raises(ValueError, match=message):
        TrialConfig.from_dict(config)


def test_a_param_whose_config_does_not_hash_to_its_id_is_refused(tiny_spec):
    param = expand(tiny_spec)[0].as_param()
    param["config"]["seed"] += 1
    with pytest.raises(ValueError, match="does not hash to its id"):
        Trial.from_param(param)
