"""A study's own dataset: nnU-Net v2 raw and generic Decathlon folders declared inline in a
study file (study.data.inline), checked by ``study data check --layout nnunet|msd``, its trial
identity (dataset.json's hash, never the folder) and one trial end to end on each layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import head, write_image

from study.data import inline, loader, reader, splits
from study.expand import expand
from study.identity import DatasetConfig
from study.spec import SpecError, load_study

SHAPE = (12, 12, 12)
STUDY = """name: own
dataset: {dataset}
fractions: [1.0]
model: {{name: unet, preset: tiny}}
training: {{iterations: 2, batch_size: 1, input_patch: [16, 16, 16]}}
techniques: [vanilla]
"""


def _nnunet(root: Path, cases: int = 4, ending: str = ".nii.gz", labels=None,
            spacings=None, test: int = 0) -> Path:
    """An nnU-Net v2 raw folder: 2 channels (T2, ADC = 2 x T2), labels lesion (1) and oedema
    (2); ``test`` labelled cases in imagesTs/ + labelsTs/."""
    meta = {"channel_names": {"0": "T2", "1": "ADC"},
            "labels": labels or {"background": 0, "lesion": 1, "oedema": 2},
            "numTraining": cases, "file_ending": ending, "name": "Lesions"}
    for i in range(cases + test):
        images, labels_dir = ("imagesTr", "labelsTr") if i < cases else ("imagesTs", "labelsTs")
        spacing = spacings[i] if spacings else (1.0, 1.0, 1.0)
        image, label = head(SHAPE, seed=i)
        label[2:4, 2:4, 2:4] = 2
        for k in range(2):
            write_image(root / images / f"case_{i:03d}_{k:04d}{ending}", image * (k + 1), spacing)
        write_image(root / labels_dir / f"case_{i:03d}{ending}", label, spacing)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _msd(root: Path, cases: int = 4) -> Path:
    """A Decathlon task folder: 4-D images (FLAIR, T1w), labels 0 background, 1 edema,
    2 tumour."""
    meta = {"name": "Brain", "modality": {"0": "FLAIR", "1": "T1w"},
            "labels": {"0": "background", "1": "edema", "2": "tumour"}, "training": [],
            "test": []}
    for i in range(cases):
        image, label = head(SHAPE, seed=i, fill=2)
        label[2:4, 2:4, 2:4] = 1
        write_image(root / "imagesTr" / f"brain_{i:03d}.nii.gz", np.stack([image, 3 * image]))
        write_image(root / "labelsTr" / f"brain_{i:03d}.nii.gz", label)
        meta["training"].append({"image": f"./imagesTr/brain_{i:03d}.nii.gz",
                                 "label": f"./labelsTr/brain_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _study(tmp_path: Path, dataset: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(STUDY.format(dataset=dataset))
    return path


def _info(layout: str, root: Path, test_cases=1, **options):
    """The DatasetInfo a trial of this own dataset gets (spec -> identity -> dataset_info)."""
    declared = inline.declare(layout, root, options)
    dataset = DatasetConfig.from_dict({"name": root.name, "test_cases": test_cases,
                                       "validation_cases": 0, **declared})
    return inline.dataset_info(dataset, root)


# ----------------------------------------------------------------------------- good folders

@pytest.mark.parametrize("ending", [".nii.gz", ".mha", ".nrrd"])
def test_nnunet_folder_loads_channels_classes_and_median_spacing(tmp_path, ending):
    """Channels come from channel_names in order (ADC = 2 x T2 in the files), classes from
    labels in raw-value order, the target spacing is the median (3.0 of 2.0, 3.0, 4.0); any
    file ending SimpleITK reads."""
    spacings = [(s, 1.0, 1.0) for s in (2.0, 3.0, 4.0)]
    root = _nnunet(tmp_path / "Dataset501_Lesions", cases=3, ending=ending, spacings=spacings)
    info = _info("nnunet", root, rare=["lesion"])
    assert info.channels == ("T2", "ADC") and info.layout == "nnunet"
    assert dict(info.classes) == {"background": (0,), "lesion": (1,), "oedema": (2,)}
    assert info.rare == ("lesion",) and info.lcc_classes == ("lesion",)  # lcc defaults to rare
    assert info.roi == "nonzero" and info.target_spacing == "median"
    assert loader.list_cases(info, root) == ["case_000", "case_001", "case_002"]
    raw, problems = reader.read_case(info, reader.case_files(info, root, "case_001"))
    assert problems == []
    t2, adc = (sitk.GetArrayFromImage(im) for im in raw.images)
    np.testing.assert_allclose(adc, 2 * t2)
    case = loader.load_case(info, root, "case_000", cache_dir=tmp_path / "cache")
    assert case.image.shape[0] == 2 and case.spacing[0] == pytest.approx(3.0, rel=0.02)
    assert set(np.unique(case.label)) == {0, 1, 2}


def test_msd_folder_generic_classes_from_dataset_json_and_merges(tmp_path):
    """Any Decathlon task: modality -> channels (4-D split in order), labels -> classes; a
    study may merge labels by name (edema into the background) and set CT-free defaults."""
    root = _msd(tmp_path / "Task01_Brain")
    info = _info("msd", root, rare=["tumour"])
    assert info.channels == ("FLAIR", "T1w")
    assert dict(info.classes) == {"background": (0,), "edema": (1,), "tumour": (2,)}
    raw, problems = reader.read_case(info, reader.case_files(info, root, "brain_002"))
    assert problems == [] and len(raw.images) == 2
    merged = _info("msd", root, classes={"background": ["background", "edema"],
                                         "core": ["tumour"]}, rare=["core"])
    assert dict(merged.classes) == {"background": (0, 1), "core": (2,)}
    case = loader.load_case(merged, root, "brain_000", cache_dir=tmp_path / "cache")
    unmerged = loader.load_case(info, root, "brain_000", cache_dir=tmp_path / "cache")
    assert set(np.unique(case.label)) == {0, 1}  # edema is background: a fresh cache entry
    assert (case.label == 1).sum() == (unmerged.label == 2).sum()


def test_nnunet_labelled_imagests_is_the_test_set(tmp_path):
    """imagesTs/ + labelsTs/ are the test set (test_cases not given); every other case trains;
    imagesTs/ without labelsTs/ is skipped with a note."""
    root = _nnunet(tmp_path / "Dataset502_Ts", cases=4, test=2)
    info = _info("nnunet", root, test_cases=None, rare=["lesion"])
    ids = loader.list_cases(info, root)
    given = loader.given_test_cases(info, root)
    assert given == ["case_004", "case_005"] and len(ids) == 6
    train, test = splits.split(ids, None, 1.0, given_test=given)
    assert test == given and train == ["case_000", "case_001", "case_002", "case_003"]
    with pytest.raises(ValueError, match="test_cases: the dataset's own test set"):
        splits.split(ids, 1, 1.0, given_test=given)
    shutil.rmtree(root / "labelsTs")
    found = reader.scan(info, root, fresh=True)
    assert found.given_test == [] and "unlabelled test cases skipped" in found.notes[0]


# ----------------------------------------------------------------------------- broken folders

def _broken_nnunet(root: Path) -> dict[str, str]:
    """An nnU-Net folder with one problem per case (and a few of the folder); returns the
    expected message fragment of each."""
    _nnunet(root, cases=9)
    images, labels = root / "imagesTr", root / "labelsTr"
    image, label = head(SHAPE)
    (images / "case_001_0001.nii.gz").unlink()
    bad = label.copy()
    bad[0, 0, :2] = 7
    write_image(labels / "case_002.nii.gz", bad)
    write_image(images / "case_003_0001.nii.gz", image[:, :, :10])
    write_image(images / "case_004_0000.nii.gz", image, spacing=(2.0, 1.0, 1.0))
    moved = sitk.GetImageFromArray(image)
    moved.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(moved, str(images / "case_005_0000.nii.gz"))
    turned = sitk.GetImageFromArray(image)
    turned.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    sitk.WriteImage(turned, str(images / "case_006_0001.nii.gz"))
    write_image(labels / "case_007.nii.gz", np.zeros_like(label))
    nan = image.copy()
    nan[4, 4, 4] = np.nan
    write_image(images / "case_008_0000.nii.gz", nan)
    write_image(labels / "orphan.nii.gz", label)
    write_image(images / "case_000_0002.nii.gz", image)
    write_image(images / "stray.nii.gz", image)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": 8}))
    return {
        "missing channel": "case_001_0001.nii.gz: file not found",
        "label values": "case_002.nii.gz: label values [7] (2 voxels) are not among",
        "shape": "case_003_0001.nii.gz: shape (12, 12, 10) differs from case_003.nii.gz's",
        "spacing": "case_004_0000.nii.gz: spacing (2.0, 1.0, 1.0) differs",
        "origin": "case_005_0000.nii.gz: origin (5.0, 0.0, 0.0) differs",
        "direction": "case_006_0001.nii.gz: direction",
        "empty label": "case_007.nii.gz: no foreground voxel",
        "nan": "case_008_0000.nii.gz: 1 NaN or inf intensities",
        "orphan": "orphan.nii.gz: label without images",
        "channel": "case_000_0002.nii.gz: channel 0002, but dataset.json declares 2 channel(s)",
        "name": "stray.nii.gz: not named <case>_XXXX.nii.gz",
        "numTraining": "dataset.json: numTraining is 8 but imagesTr/ holds 9 case(s)",
    }


def test_every_nnunet_problem_is_listed_with_its_file(tmp_path, capsys):
    """Missing channel file, label value outside dataset.json, shape / spacing / origin /
    direction mismatch, empty label, NaN, orphan label, extra channel, badly named file and a
    numTraining mismatch: ``study data check --layout nnunet`` lists every one, exits 1, and
    prints no traceback."""
    from study.cli import main

    expected = _broken_nnunet(tmp_path / "Dataset503_Broken")
    assert main(["data", "check", str(tmp_path / "Dataset503_Broken"), "--layout",
                 "nnunet"]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out
    for what, fragment in expected.items():
        assert fragment in out, (what, out)
    assert f"{len(expected)} problem(s)" in out


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda meta: "{broken", "dataset.json: not readable JSON"),
    (lambda meta: {**meta, "file_ending": None}, "'file_ending' missing or not a file ending"),
    (lambda meta: {k: v for k, v in meta.items() if k != "channel_names"},
     "'channel_names' missing or empty"),
    (lambda meta: {k: v for k, v in meta.items() if k != "numTraining"},
     "'numTraining' missing or not an integer"),
    (lambda meta: {**meta, "labels": {"background": 1, "lesion": 2}},
     "labels.background: expected 0, got 1"),
    (lambda meta: {**meta, "labels": {"background": 0, "lesion": "one"}},
     "labels.lesion: expected an integer >= 0 or a non-empty list"),
])
def test_broken_dataset_json_is_named_by_key(tmp_path, capsys, mutate, fragment):
    from study.cli import main

    root = _nnunet(tmp_path / "Dataset504_Json", cases=2)
    meta = mutate(json.loads((root / "dataset.json").read_text()))
    (root / "dataset.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    assert main(["data", "check", str(root), "--layout", "nnunet"]) == 1
    out = capsys.readouterr().out
    assert f"{root / 'dataset.json'}: " in out and fragment in out
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        load_study(_study(tmp_path, f"{{layout: nnunet, root: {root}, rare: [lesion], "
                                    "test_cases: 1}"))


def test_data_check_good_nnunet_and_msd_folders(tmp_path, capsys):
    from study.cli import main

    root = _nnunet(tmp_path / "Dataset505_Good", test=2)
    assert main(["data", "check", str(root), "--layout", "nnunet"]) == 0
    out = capsys.readouterr().out
    assert "Dataset505_Good at" in out and "6 cases, 2 channel(s) (T2, ADC)" in out
    assert "class 1 lesion" in out and "class 2 oedema" in out
    assert "splits: the dataset's own test set (2 labelled cases of imagesTs/)" in out
    assert out.strip().endswith("passed every check")
    assert main(["data", "check", str(_msd(tmp_path / "Task01_Brain")), "--layout", "msd"]) == 0
    assert "4 cases, 2 channel(s) (FLAIR, T1w)" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "nowhere"), "--layout", "msd"]) == 1
    assert "nowhere: dataset folder not found" in capsys.readouterr().out


def test_region_labels_are_refused_unless_the_study_maps_them(tmp_path, capsys):
    """nnU-Net regions overlap; this tool trains exclusive classes: a study must map the raw
    values itself. ``data check`` checks one class per raw value and notes why."""
    from study.cli import main

    labels = {"background": 0, "whole tumour": [1, 2], "lesion": 1, "oedema": 2}
    root = _nnunet(tmp_path / "Dataset506_Regions", labels=labels)
    with pytest.raises(SpecError, match=r"dataset.classes: required here: .* declares region "
                                        r"labels \['whole tumour'\]"):
        load_study(_study(tmp_path, f"{{layout: nnunet, root: {root}, rare: [lesion], "
                                    "test_cases: 1}"))
    spec = load_study(_study(tmp_path, f"{{layout: nnunet, root: {root}, rare: [core], "
                                       "test_cases: 1, classes: {background: [0], "
                                       "core: [lesion, 2]}}"))
    assert spec.dataset.options["classes"] == {"background": [0], "core": [1, 2]}
    assert main(["data", "check", str(root), "--layout", "nnunet"]) == 0
    assert "note: " in capsys.readouterr().out


# ----------------------------------------------------------------------------- study files

@pytest.mark.parametrize(("extra", "fragment"), [
    ("rare: [lesoin], test_cases: 1",
     r"dataset.rare\[0\]: unknown class 'lesoin' \(did you mean 'lesion'\?"),
    ("rare: [lesion], test_cases: 1, classes: {background: [background], lesion: [lesoin]}",
     r"dataset.classes.lesion\[0\]: unknown label 'lesoin' \(did you mean 'lesion'\?"),
    ("rare: [lesion], test_cases: 1, classes: {background: [0], lesion: [1]}",
     r"dataset.classes: raw label\(s\) \[2\] .* are in no class"),
    ("rare: [lesion], test_cases: 1, classes: {background: [0, 1], lesion: [1, 2]}",
     r"dataset.classes.lesion: raw label 1 is also in class 'background'"),
    ("rare: [lesion], test_cases: 1, target_spacing: [1, 1]",
     r"dataset.target_spacing: expected \[D, H, W\] positive mm"),
    ("rare: [lesion], test_cases: 1, roi: skull", r"dataset.roi: expected one of nonzero, body"),
    ("rare: [lesion], test_cases: 1, clip: [5, 1]", r"dataset.clip: expected \[low, high\]"),
    ("rare: [lesion], test_cases: 1, lcc: {lesion: 0}", r"dataset.lcc.lesion: expected the "
                                                       r"number of components"),
    ("rare: [lesion], test_cases: 1, lc: [lesion]", r"dataset.lc: unknown key 'lc' \(did you "
                                                    r"mean 'lcc'\?"),
    ("test_cases: 1", r"dataset.rare: required"),
    ("rare: [lesion]", r"dataset.test_cases: required key is missing"),
    ("rare: [lesion], test_cases: 1, name: brats", r"dataset.name: expected a name .* that no "
                                                   r"declared dataset has"),
])
def test_inline_dataset_errors_name_the_key(tmp_path, extra, fragment):
    root = _nnunet(tmp_path / "Dataset507_Spec", cases=2)
    with pytest.raises(SpecError, match=fragment):
        load_study(_study(tmp_path, f"{{layout: nnunet, root: {root}, {extra}}}"))


def test_declared_dataset_rejects_own_dataset_options_and_unknown_layouts(tmp_path):
    with pytest.raises(SpecError, match=r"dataset.rare: the declared datasets fix their classes"):
        load_study(_study(tmp_path, "{name: kits19, root: /data, rare: [kidney]}"))
    with pytest.raises(SpecError, match=r"dataset.layout: expected one of nnunet, msd"):
        load_study(_study(tmp_path, "{layout: brats, root: /data, rare: [x]}"))
    with pytest.raises(SpecError, match=r"Dataset9_None: dataset folder not found"):
        load_study(_study(tmp_path, f"{{layout: nnunet, root: {tmp_path / 'Dataset9_None'}, "
                                    "rare: [lesion], test_cases: 1}"))


def test_identity_hashes_dataset_json_not_the_folder(tmp_path):
    """The trial id holds dataset.json's sha256 and the resolved options, never the root:
    the same folder moved elsewhere keeps its trial ids; an edited dataset.json or another
    option changes them, and a trial refuses to run on a dataset.json that changed."""
    root = _nnunet(tmp_path / "a" / "Dataset508_Id")
    dataset = f"{{layout: nnunet, root: {root}, rare: [lesion], test_cases: 1}}"
    spec = load_study(_study(tmp_path, dataset))
    trial = expand(spec)[0]
    config = trial.config.to_dict()["dataset"]
    assert config["layout"] == "nnunet" and config["name"] == "Dataset508_Id"
    assert str(tmp_path) not in json.dumps(trial.config.to_dict())
    assert config["options"]["roi"] == "nonzero" and config["options"]["lcc"] == ["lesion"]
    assert spec.dataset.root == str(root)

    moved = tmp_path / "b" / "Dataset508_Id"
    shutil.copytree(root, moved)
    assert expand(load_study(_study(tmp_path, dataset.replace(str(root), str(moved)))))[0] \
        .trial_id == trial.trial_id
    assert inline.dataset_info(trial.config.dataset, moved).channels == ("T2", "ADC")
    other = expand(load_study(_study(tmp_path, dataset.replace("rare: [lesion]",
                                                               "rare: [lesion, oedema]"))))
    assert other[0].trial_id != trial.trial_id

    meta = json.loads((moved / "dataset.json").read_text())
    (moved / "dataset.json").write_text(json.dumps({**meta, "description": "edited"}))
    assert expand(load_study(_study(tmp_path, dataset.replace(str(root), str(moved)))))[0] \
        .trial_id != trial.trial_id
    with pytest.raises(ValueError, match=r"dataset.json: changed since the trial was made"):
        inline.dataset_info(trial.config.dataset, moved)
    with pytest.raises(ValueError, match=r"no folder given .* --dataset-root Dataset508_Id="):
        inline.dataset_info(trial.config.dataset)


def test_plan_of_an_inline_study_reads_only_dataset_json(tmp_path, capsys):
    """``study plan`` expands an own-dataset study from dataset.json alone (no image)."""
    from study.cli import main

    root = tmp_path / "Dataset509_Plan"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": 40, "file_ending": ".nii.gz"}))
    path = _study(tmp_path, f"{{layout: nnunet, root: {root}, rare: [tumour], "
                            "test_cases: 10, lcc: {liver: 1, tumour: 2}}")
    assert main(["plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    records = [t for e in plan.get("experiments", [plan]) for t in e.get("trials", [])] \
        or plan["trials"]
    assert len(records) == 1 and records[0]["dataset"] == "Dataset509_Plan"
    options = expand(load_study(path))[0].config.to_dict()["dataset"]["options"]
    assert options["roi"] == "body" and options["lcc"] == {"liver": 1, "tumour": 2}


# ----------------------------------------------------------------------------- end to end

@pytest.mark.parametrize(("layout", "test"), [("nnunet", 0), ("nnunet", 1), ("msd", 0)])
def test_one_trial_end_to_end_on_an_own_dataset(tmp_path, layout, test):
    """One trial through the public ``run_trial`` path on each layout (and on an nnU-Net
    folder whose labelled imagesTs/ is the test set): 12^3 cases, smaller than the 16^3 patch
    (the sampler and the sliding window pad)."""
    from study.results import ResultStore
    from study.run_options import RunOptions
    from study.trial import run_trial

    root = (_nnunet(tmp_path / "Dataset510_E2e", test=test) if layout == "nnunet"
            else _msd(tmp_path / "Task10_E2e"))
    rare = "lesion" if layout == "nnunet" else "tumour"
    held_out = "" if test else ", test_cases: 1"
    spec = load_study(_study(tmp_path, f"{{layout: {layout}, root: {root}, rare: [{rare}]"
                                       f"{held_out}}}"))
    options = RunOptions(data_dir=str(tmp_path / "data"), results_uri=str(tmp_path / "results"),
                         dataset_roots={spec.dataset.name: str(root)}, threads=1)
    summary = run_trial(expand(spec)[0].as_param(), options)
    assert summary["status"] == "ok"
    trials = ResultStore(options.results_uri).trials()
    assert trials.loc[0, "train_cases"] == 4 - (not test) and trials.loc[0, "test_cases"] == 1
