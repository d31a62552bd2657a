"""Trial expansion and the trial_id contract (docs/ARCHITECTURE.md, "Trial identity")."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from study.trials import canonical_json, expand, param_label, trial_id

DEMO = "search_spaces/studies/demo.yaml"
GOLDEN_ID = "0a4c5c4631d66713"  # sha256 of the canonical JSON below, first 16 hex digits


def _ids_in_subprocess(path: str) -> list[str]:
    code = ("import json,sys; from study.spec import load_study; from study.trials import expand;"
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
    config = expand(tiny_spec)[1].config
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
    assert [(t.config["technique"], t.param_label) for t in trials] == [
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
    from study.trials import trial_config

    fraction, technique, hp = tiny_spec.fractions[0], "asym_focal", {"gamma": 2.0}
    base = trial_config(tiny_spec, fraction, technique, hp, 0)
    assert "pretrain" not in base["training"]
    ids = {trial_id(trial_config(dataclasses.replace(
        tiny_spec, training=dataclasses.replace(tiny_spec.training, pretrain=k)),
        fraction, technique, hp, 0)) for k in (0, 1, 2)}
    assert trial_id(base) in ids and len(ids) == 3
