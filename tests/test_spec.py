"""Study and search-space validation: every error names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from study.spec import SpecError, load_search_spaces, load_study


def _write_study(tmp_path: Path, tiny_study_path: Path, **changes) -> Path:
    data = yaml.safe_load(tiny_study_path.read_text())
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_repository_search_spaces_are_valid():
    """Every shipped search space loads; grids are the papers' (001 Table VIII / 000 IV)."""
    spaces = load_search_spaces()
    assert [p["gamma"] for p in spaces["asym_focal"].grid] == [0.5, 1, 1.5, 2, 3, 4]
    assert [p["m"] for p in spaces["asym_large_margin"].grid] == [0.2, 0.5, 1, 1.5, 2, 3]
    assert spaces["vanilla"].settings() == [{}]


def test_repository_studies_are_valid():
    """Every shipped study file loads and expands."""
    from study.expand import expand
    from study.spec import load_studies

    for path in sorted(Path("search_spaces/studies").glob("*.yaml")):
        assert all(expand(spec) for spec in load_studies(path)), path


@pytest.mark.parametrize(("changes", "message"), [
    ({"fractions": [0.5, 1.5]}, r"fractions\[1\]: expected a fraction in \(0, 1\], got 1.5"),
    ({"training__iterations": 0}, r"training.iterations: expected a positive integer <= "
     r"10,000,000, got 0"),
    ({"training__iterations": 10**23}, r"training.iterations: expected a positive integer <="),
    ({"training__iterations": None, "training__iteration": 5},
     r"training.iterations: required key is missing \(found 'iteration': did you mean "
     r"'iterations'\?\)"),
    ({"training__patch": [16, 16, 16]}, r"training.patch: renamed: write `input_patch`"),
    ({"training__input_patch": [16, 16, 10]},
     r"training.input_patch: .*divisible by 4"),
    ({"model": {"name": "deepmedic", "preset": "tiny"}, "training__input_patch": [8, 17, 17]},
     r"training.input_patch: deepmedic/tiny: input segment \[8, 17, 17\] gives output"),
    ({"training__update": "both"}, r"training.update: expected one of summed, sequential"),
    ({"training__mixup_lambda": "x"}, r"training.mixup_lambda: expected one of paper, code"),
    ({"training__sampling": "x"}, r"training.sampling: expected one of balanced, nnunet"),
    ({"training__pretrain": -1}, r"training.pretrain: expected an integer >= 0 and < "
     r"training.iterations \(\d+\); the CE pre-training counts within the budget, got -1"),
    ({"training__pretrain": 10 ** 8}, r"training.pretrain: expected an integer >= 0 and < "),
    ({"training__pretrain": 2.5}, r"training.pretrain: expected an integer"),
    ({"augmentation": "elastic"}, r"augmentation: expected one of none, deepmedic, nnunet"),
    ({"techniques": [{"technique": "asym_focal", "by_fraction": {0.25: {"gamma": 2}}}]},
     r"techniques\[0\].by_fraction.0.25: 0.25 is not a fraction of this experiment \(0.5\)"),
    ({"fractions": [0.5, 1.0],
      "techniques": [{"technique": "asym_focal", "by_fraction": {0.5: {"gamma": 2}}}]},
     r"techniques\[0\].by_fraction: no setting for fraction\(s\) 1"),
    ({"techniques": [{"technique": "asym_combination", "grid": [{"m": 1, "eps": 1e-5}]}]},
     r"techniques\[0\].grid\[0\]: technique asym_combination: eps and l go together, "
     r"got only eps"),
    ({"techniques": [{"technique": "asym_combination", "grid": [{}]}]},
     r"techniques\[0\].grid\[0\]: technique asym_combination: combines nothing"),
    ({"techniques": [{"technique": "asym_focal", "grid": {"gamma": [2]},
                      "by_fraction": {0.5: {"gamma": 2}}}]},
     r"give either `grid` or `by_fraction`"),
    ({"traning": {}}, r"traning: unknown key 'traning' \(did you mean 'training'\?"),
    ({"training__iteratons": 5}, r"training.iteratons: unknown key"),
    ({"techniques": ["vanilla", "asym_focall"]},
     r"techniques\[1\].technique: unknown technique 'asym_focall'"),
    ({"techniques": [{"technique": "asym_focal", "grid": {"gamma": [7]}}]},
     r"gamma=7.0 lies outside its range \[0.0, 6.0\]"),
    ({"dataset__name": "brats-2030"}, r"dataset.name: expected one of synthetic-brats"),
    ({"dataset__synthetic": {"cases": 1}}, r"dataset.synthetic: cases: expected an integer 2"),
    ({"dataset__synthetic": {"size": 3}}, r"dataset.synthetic.size: unknown generator parameter"),
    ({"dataset__synthetic": {"contrast": [0.9, 0.2]}}, r"dataset.synthetic: contrast: expected"),
    ({"name": None}, r"name: required key is missing"),
    ({"seeds": [True]}, r"seeds\[0\]: expected a non-negative integer, got True"),
])
def test_bad_study_names_file_and_key(tmp_path, tiny_study_path, changes, message):
    """A malformed study raises SpecError with the file path and the dotted key."""
    path = _write_study(tmp_path, tiny_study_path, **changes)
    with pytest.raises(SpecError, match=message) as error:
        load_study(path)
    assert str(path) in str(error.value)


def test_bad_yaml_and_missing_file(tmp_path):
    """Unparsable YAML and a missing file are SpecErrors naming the file."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad.yaml: not valid YAML"):
        load_study(bad)
    with pytest.raises(SpecError, match=r"nope.yaml: cannot read"):
        load_study(tmp_path / "nope.yaml")


def test_exponent_without_dot_is_a_number(tmp_path):
    """PyYAML reads `1e-5` as a string; search spaces accept it as the number it means."""
    (tmp_path / "adversarial.yaml").write_text(
        "technique: adversarial\nhyperparameters:\n  eps: {low: 1e-7, high: 1e-3, log: true}\n"
        "  l: {low: 1, high: 20}\ngrid:\n  - {eps: 1e-5, l: 10}\n")
    assert load_search_spaces(tmp_path)["adversarial"].grid == ({"eps": 1e-5, "l": 10.0},)


def test_bad_search_space(tmp_path):
    """Unknown hyperparameters and file/technique mismatches are rejected by key."""
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "focal.yaml").write_text("technique: focal\nhyperparameters:\n"
                                       "  gama: {low: 0, high: 6}\ngrid: {gama: [1]}\n")
    with pytest.raises(SpecError, match=r"hyperparameters.gama: unknown hyperparameter"):
        load_search_spaces(spaces)
    (spaces / "focal.yaml").write_text("technique: other\n")
    with pytest.raises(SpecError, match=r"technique: technique 'other' must match"):
        load_search_spaces(spaces)


def test_generator_numbers_keep_their_identity(tmp_path, tiny_study_path):
    """`lesion_scale: 1` and `lesion_scale: 1.0` (or contrast [1, 2] vs [1.0, 2.0]) describe
    the same data, hence the same trials."""
    from study.expand import expand

    ids = []
    for scale, contrast in ((1, [1, 2]), (1.0, [1.0, 2.0])):
        path = _write_study(tmp_path, tiny_study_path, dataset__synthetic={
            "cases": 6, "shape": [24, 24, 24], "seed": 1, "lesion_scale": scale,
            "contrast": contrast})
        ids.append([t.trial_id for t in expand(load_study(path))])
    assert ids[0] == ids[1]


def test_inputs_that_would_exhaust_the_machine_are_refused_early(tmp_path, tiny_study_path):
    """A YAML alias bomb of a few hundred bytes, an oversized file, non-UTF-8 bytes, a 10^6
    grid and a study of too many trials are each one short SpecError, raised before anything
    large is built."""
    from study.expand import expand
    from study.spec import MAX_FILE_BYTES

    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\nname: *a8\n")
    assert bomb.stat().st_size < 1000
    with pytest.raises(SpecError, match="aliases expand to more than") as error:
        load_study(bomb)
    assert len(str(error.value)) < 300
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_FILE_BYTES)
    with pytest.raises(SpecError, match="a study or search-space file holds at most"):
        load_study(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"not UTF-8 text \(byte 9"):
        load_study(latin)
    grid = {"technique": "adversarial", "grid": {"eps": [1e-7 * (i + 1) for i in range(1001)],
                                                 "l": [1 + 0.05 * i for i in range(1001)]}}
    with pytest.raises(SpecError, match="1001 x 1001 = 1,002,001 grid points; at most 10,000"):
        load_study(_write_study(tmp_path, tiny_study_path, techniques=[grid]))
    many = {"technique": "asym_focal", "grid": {"gamma": [i * 6e-4 for i in range(10_000)]}}
    spec = load_study(_write_study(tmp_path, tiny_study_path, techniques=[many],
                                   seeds=[0, 1, 2]))
    with pytest.raises(SpecError, match="expands to 30,000 trials, more than the limit"):
        expand(spec)
    few = load_study(_write_study(tmp_path, tiny_study_path, seeds=[0, 1, 2]))
    with pytest.raises(SpecError, match="expands to 6 trials, more than the limit of 5"):
        expand(few, max_trials=5)
    assert len(expand(few, max_trials=6)) == 6
