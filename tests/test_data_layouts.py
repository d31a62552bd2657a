"""Real dataset layouts read through SimpleITK: tiny fixtures written in each published layout,
every bad input reported with its file, and ``study data check``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from helpers import head, write_image

from study.data import check, loader, presets, reader, synthetic
from study.data.registry import DATASETS


def _ct(shape=(10, 40, 40), seed=0):
    rng = np.random.default_rng(seed)
    _, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = y ** 2 + x ** 2 < 0.7
    image = np.where(body, 40 + 15 * rng.standard_normal(shape), -1000).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    return image, label


# ----------------------------------------------------------------------------- layouts

def test_brats_layout_nested_folders_and_channel_order(tmp_path):
    """BraTS 2017 keeps cases in HGG/ and LGG/, files may be .nii or .nii.gz; channels come in
    the declared order t1, t1ce, t2, flair; tumour core = labels 1 + 4, oedema 2 background."""
    info = DATASETS["brats"]
    for group, case, suffix in (("HGG", "Brats17_A_1", ".nii.gz"), ("LGG", "Brats17_B_1", ".nii")):
        folder = tmp_path / group / case
        image, label = head()
        label[5, 6, 7], label[6, 6, 7], label[7, 8, 9] = 4, 1, 2
        for k, channel in enumerate(info.channels):
            write_image(folder / f"{case}_{channel}{suffix}", image * (k + 1))
        write_image(folder / f"{case}_seg{suffix}", label)
    assert loader.list_cases(info, tmp_path) == ["Brats17_A_1", "Brats17_B_1"]
    raw, problems = reader.read_case(info, reader.case_files(info, tmp_path, "Brats17_B_1"))
    assert problems == []
    means = [sitk.GetArrayViewFromImage(im).max() for im in raw.images]
    assert np.argsort(means).tolist() == [0, 1, 2, 3]
    case = loader.load_case(info, tmp_path, "Brats17_A_1")
    _, label = head()
    assert case.label.sum() == label.sum() - 1  # the voxel set to oedema (2) is background
    assert case.image.shape[0] == 4 and case.spacing == (1.0, 1.0, 1.0)


def test_atlas_layouts_bids_and_r1_with_merged_masks(tmp_path):
    """ATLAS 2.0 (BIDS names under Training/R001/sub-*/ses-1/anat) and R1.x (Site*/<id>/t01 with
    several LesionSmooth masks, merged) are both found; case ids are the subject ids."""
    info = DATASETS["atlas"]
    image, label = head()
    anat = tmp_path / "Training" / "R001" / "sub-r001s001" / "ses-1" / "anat"
    prefix = "sub-r001s001_ses-1_space-MNI152NLin2009aSym"
    write_image(anat / f"{prefix}_T1w.nii.gz", image)
    write_image(anat / f"{prefix}_label-L_desc-T1lesion_mask.nii.gz", label)
    site = tmp_path / "Site1" / "031768" / "t01"
    write_image(site / "031768_t1w_deface_stx.nii.gz", image)
    second = np.zeros_like(label)
    second[2:4, 6:8, 6:8] = 1
    write_image(site / "031768_LesionSmooth_stx.nii.gz", label)
    write_image(site / "031768_LesionSmooth_1_stx.nii.gz", second)
    assert loader.list_cases(info, tmp_path) == ["031768", "sub-r001s001"]
    merged = loader.load_case(info, tmp_path, "031768")
    single = loader.load_case(info, tmp_path, "sub-r001s001")
    assert merged.label.sum() == label.sum() + second.sum() == single.label.sum() + second.sum()


def test_kits19_layout_slice_axis_first_resampled_and_unlabelled_cases_noted(tmp_path):
    """KiTS19 stores the slice axis first in the NIfTI (last in SimpleITK's array order): the
    3.2 mm target goes to it. Folders without segmentation (test cases) are skipped with a
    note; CT z-scoring happens inside the body (air is not the ROI)."""
    info = DATASETS["kits19"]
    image, label = _ct((40, 40, 10))
    label[18:24, 10:16, 4:7] = 1
    label[20:22, 11:13, 5:6] = 2
    write_image(tmp_path / "case_00000" / "imaging.nii.gz", image, spacing=(0.8, 0.8, 3.0))
    write_image(tmp_path / "case_00000" / "segmentation.nii.gz", label, spacing=(0.8, 0.8, 3.0))
    write_image(tmp_path / "case_00210" / "imaging.nii.gz", image, spacing=(0.8, 0.8, 3.0))
    found = reader.scan(info, tmp_path, fresh=True)
    assert list(found.cases) == ["case_00000"] and "case_00210" in found.notes[0]
    case = loader.load_case(info, tmp_path, "case_00000")
    assert case.spacing == pytest.approx((1.6, 1.6, 3.2))
    assert (case.label == 2).any() and (case.label == 1).any()
    assert not case.roi.all()  # air around the body is outside the ROI
    assert abs(float(case.image[0][case.roi].mean())) < 1e-3


def test_msd_layout_4d_multichannel_and_dataset_json(tmp_path):
    """Decathlon: the training list of dataset.json, 4-D images split into the declared
    channels in order (T2, ADC), labels 0/1/2; the median spacing is the target; a
    dataset.json that disagrees with the declaration is reported."""
    info = DATASETS["msd-prostate"]
    meta = {"name": "Prostate", "modality": {"0": "T2", "1": "ADC"},
            "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "training": []}
    for i, spacing in enumerate(((3.6, 0.6, 0.6), (4.0, 0.6, 0.6), (3.0, 0.6, 0.6))):
        t2, label = head(seed=i, fill=2)
        label[4, 6:9, 7:10] = 1
        write_image(tmp_path / "imagesTr" / f"prostate_{i:02d}.nii.gz", np.stack([t2, 2 * t2]),
               spacing)
        write_image(tmp_path / "labelsTr" / f"prostate_{i:02d}.nii.gz", label, spacing)
        meta["training"].append({"image": f"./imagesTr/prostate_{i:02d}.nii.gz",
                                 "label": f"./labelsTr/prostate_{i:02d}.nii.gz"})
    (tmp_path / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"macOS resource fork")
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    assert loader.list_cases(info, tmp_path) == ["prostate_00", "prostate_01", "prostate_02"]
    raw, problems = reader.read_case(info, reader.case_files(info, tmp_path, "prostate_01"))
    assert problems == [] and len(raw.images) == 2
    t2, adc = (sitk.GetArrayFromImage(im) for im in raw.images)
    np.testing.assert_allclose(adc, 2 * t2)
    case = loader.load_case(info, tmp_path, "prostate_01")
    assert case.spacing[0] == pytest.approx(3.6, rel=0.02)  # median of 3.0, 3.6, 4.0
    assert set(np.unique(case.label)) == {0, 1, 2}
    meta["modality"] = {"0": "T2"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    report = check.check_dataset(info, tmp_path)
    assert any("modalities ['T2'] differ" in p for p in report.problems)


def test_btcv_layout_thirteen_organs_and_rare_vector(tmp_path):
    """BTCV: img/imgXXXX + label/labelXXXX, 13 organs; r marks classes 4, 5, 8-13 (000 §F);
    every organ is a single-object class for post-processing; resampled to 2 mm."""
    info = DATASETS["btcv"]
    assert info.rare_vector() == [0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]
    assert len(info.classes) == 14 and set(info.lcc_classes) == set(info.class_names[1:])
    image, label = _ct((8, 48, 40))
    for organ in range(1, 14):
        label[2:6, 3 * organ:3 * organ + 3, 18:24] = organ
    write_image(tmp_path / "img" / "img0001.nii.gz", image, spacing=(3.0, 0.8, 0.8))
    write_image(tmp_path / "label" / "label0001.nii.gz", label, spacing=(3.0, 0.8, 0.8))
    case = loader.load_case(info, tmp_path, "img0001")
    assert case.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert set(np.unique(case.label)) == set(range(14))


def test_promise12_layout_mhd_resampled_to_the_papers_spacing(tmp_path):
    """PROMISE12: CaseXX.mhd/.raw with CaseXX_segmentation.mhd; 004 §4.1 resamples to
    1 x 1 x 1.5 mm (1.5 mm across slices)."""
    info = DATASETS["promise12"]
    image, label = head((10, 30, 30))
    label[3:7, 10:20, 10:20] = 1
    write_image(tmp_path / "TrainingData_Part1" / "Case00.mhd", image, spacing=(3.6, 0.6, 0.6))
    write_image(tmp_path / "TrainingData_Part1" / "Case00_segmentation.mhd", label,
           spacing=(3.6, 0.6, 0.6))
    assert (tmp_path / "TrainingData_Part1" / "Case00.raw").exists()
    assert loader.list_cases(info, tmp_path) == ["Case00"]
    case = loader.load_case(info, tmp_path, "Case00")
    assert case.spacing == pytest.approx((1.5, 1.0, 1.0))
    assert (case.label == 1).sum() * 1.5 == pytest.approx(4 * 3.6 * 10 * 0.6 * 10 * 0.6,
                                                           rel=0.2)


# ----------------------------------------------------------------------------- bad input

def _bad_brats(root: Path) -> dict[str, str]:
    """A BraTS folder with one good case and one case per kind of bad input; returns the
    expected message fragment per case."""
    channels = DATASETS["brats"].channels
    expected = {}

    def case(name, mutate=None, problem=""):
        folder = root / name
        image, label = head()
        label[6, 7, 8] = 4
        files = {c: image.copy() for c in channels}
        spacing = {c: (1.0, 1.0, 1.0) for c in channels}
        if mutate:
            mutate(files, spacing, label)
        for channel, array in files.items():
            if array is not None:
                write_image(folder / f"{name}_{channel}.nii.gz", array, spacing[channel])
        write_image(folder / f"{name}_seg.nii.gz", label)
        if problem:
            expected[name] = problem

    case("ok")
    case("unreadable")
    (root / "unreadable" / "unreadable_flair.nii.gz").write_bytes(b"not an image")
    expected["unreadable"] = "unreadable_flair.nii.gz: not a readable image"
    case("shape", lambda f, s, lab: f.update(t2=np.zeros((12, 14, 15), np.float32)),
         "shape_t2.nii.gz: shape (12, 14, 15) differs from shape_seg.nii.gz's (12, 14, 16)")
    case("spacing", lambda f, s, lab: s.update(t1=(2.0, 1.0, 1.0)),
         "spacing_t1.nii.gz: spacing (2.0, 1.0, 1.0) differs")
    case("missing", lambda f, s, lab: f.update(t1ce=None), "missing_t1ce.nii.gz: file not found")

    def bad_label(f, s, lab):
        lab[0, 0, :3] = 7

    case("labels", bad_label, "labels_seg.nii.gz: label values [7] (3 voxels) are not among")

    def nan(f, s, lab):
        f["flair"][3, 3, 3] = np.nan
        f["flair"][4, 4, 4] = np.inf

    case("nan", nan, "nan_flair.nii.gz: 2 NaN or inf intensities")

    def empty(f, s, lab):
        lab[lab == 4] = 2
        lab[lab == 1] = 2

    case("nofg", empty, "nofg_seg.nii.gz: no foreground voxel")
    (root / "stray").mkdir()
    expected["stray"] = "stray: not a case folder"
    return expected


def test_every_bad_input_is_listed_with_its_file(tmp_path, capsys):
    """Unreadable file, shape and spacing mismatch, missing modality, labels outside the
    declared set, NaN/inf, a case without foreground, a stray folder: ``check_dataset`` and
    ``study data check`` list all of them (not just the first) and exit 1; ``load_case``
    raises naming the file and writes nothing to the cache; empty or missing folders fail."""
    from study.cli import main

    info = DATASETS["brats"]
    expected = _bad_brats(tmp_path / "brats")
    report = check.check_dataset(info, tmp_path / "brats")
    for name, fragment in expected.items():
        assert any(fragment in p for p in report.problems), (name, report.problems)
    assert not any("/ok/" in p for p in report.problems)
    assert len(report.problems) == len(expected)

    assert main(["data", "check", str(tmp_path / "brats"), "--layout", "brats"]) == 1
    out = capsys.readouterr().out
    assert f"{len(expected)} problem(s)" in out
    assert all(fragment in out for fragment in expected.values())

    with pytest.raises(loader.DataError, match=r"missing_t1ce.nii.gz: file not found"):
        loader.load_case(info, tmp_path / "brats", "missing", cache_dir=tmp_path / "cache")
    with pytest.raises(loader.DataError, match=r"nan_flair.nii.gz: 2 NaN or inf"):
        loader.load_case(info, tmp_path / "brats", "nan", cache_dir=tmp_path / "cache")
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if not p.name.endswith(".lock")]
    assert leftovers == [next((tmp_path / "cache").iterdir())]  # the dataset folder only
    nofg = loader.load_case(info, tmp_path / "brats", "nofg")
    with pytest.raises(loader.DataError, match=r"nofg_seg.nii.gz: no foreground voxel"):
        loader.require_foreground([loader.load_case(info, tmp_path / "brats", "ok"), nofg],
                                  info)

    (tmp_path / "empty").mkdir()
    with pytest.raises(loader.DataError, match=r"empty: no cases found"):
        loader.list_cases(info, tmp_path / "empty")
    with pytest.raises(loader.DataError, match=r"nowhere: dataset folder not found"):
        loader.list_cases(info, tmp_path / "nowhere")
    assert main(["data", "check", str(tmp_path / "empty"), "--layout", "kits19"]) == 1
    assert "no cases found" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path), "--layout", "brats-2030"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_label_file_with_fractional_values_and_a_broken_dataset_json(tmp_path):
    info = DATASETS["atlas"]
    image, label = head()
    anat = tmp_path / "atlas" / "sub-r1" / "anat"
    write_image(anat / "sub-r1_T1w.nii.gz", image)
    write_image(anat / "sub-r1_label-L_desc-T1lesion_mask.nii.gz", label.astype(np.float32) * 0.5)
    report = check.check_dataset(info, tmp_path / "atlas")
    assert report.problems == [f"{anat / 'sub-r1_label-L_desc-T1lesion_mask.nii.gz'}: label "
                               "values must be integers, got e.g. [0.5, 0.5, 0.5]"]
    (tmp_path / "msd").mkdir()
    (tmp_path / "msd" / "dataset.json").write_text("{not json")
    report = check.check_dataset(DATASETS["msd-spleen"], tmp_path / "msd")
    assert report.problems and "dataset.json: not readable JSON" in report.problems[0]


def test_data_check_summarises_a_good_dataset(tmp_path, capsys):
    """A clean dataset: exit 0 and a summary with cases, channels, spacing and the Table I
    class-imbalance ratio of every foreground class."""
    from study.cli import main

    params = {**presets.DEFAULTS["synthetic-kits"], "cases": 3, "shape": [16, 40, 40]}
    root = synthetic.ensure_generated(params, tmp_path / "kits", preset="synthetic-kits")
    assert main(["data", "check", str(root), "--layout", "synthetic-kits"]) == 0
    out = capsys.readouterr().out
    assert "3 cases, 1 channel(s) (ct)" in out
    assert "spacing mm (D, H, W): min (3.2, 1.6, 1.6)" in out
    assert "class-imbalance ratio (001 Table I) kidney" in out
    assert "class-imbalance ratio (001 Table I) tumour" in out
    assert out.strip().endswith("passed every check")


# ----------------------------------------------------------------------------- study files

def test_study_files_name_real_datasets_by_id_and_root(tmp_path, tiny_study_path):
    """A study names a layout by id plus a root; the papers' test-set size is the default;
    a real dataset without root, or a synthetic one with a root, is rejected by key."""
    from study.spec import SpecError, load_study

    study = yaml.safe_load(tiny_study_path.read_text())
    study["dataset"] = {"name": "kits19", "root": str(tmp_path)}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    spec = load_study(path)
    assert spec.dataset.test_cases == 70 and spec.dataset.root == str(tmp_path)
    study["dataset"] = {"name": "kits19"}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(SpecError, match=r"dataset.root: a real dataset needs `root`"):
        load_study(path)
    study["dataset"] = {"name": "synthetic-atlas", "test_cases": 2, "root": "/data"}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(SpecError, match=r"dataset.root: synthetic-atlas is generated"):
        load_study(path)
    study["dataset"] = {"name": "btcv", "root": "/data", "synthetic": {"cases": 3}}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(SpecError, match=r"dataset.synthetic: btcv is a real dataset"):
        load_study(path)
    study["dataset"] = {"name": "synthetic-kits", "test_cases": 2, "synthetic": {"cases": 9}}
    path.write_text(yaml.safe_dump(study))
    assert load_study(path).dataset.synthetic == {**presets.DEFAULTS["synthetic-kits"],
                                                  "cases": 9}
