"""``study data check --figures``: the intensity histograms per class and channel (001 Fig. 10)
and the voxels per class (001 Fig. 11), collected in the check's one pass over the cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from helpers import head, write_image

from study.cli import main
from study.data import check
from study.data.reader import class_lut
from study.data.registry import DATASETS

BRATS = DATASETS["brats"]
SHAPE = (12, 14, 16)


def _two_level_case(root: Path, name: str, fill: int = 4) -> np.ndarray:
    """A BraTS case whose every voxel is inside the region of interest, with intensity 100
    in the first half of the depth axis and 200 in the second (z-scores exactly -1 and +1,
    whatever the channel's scale), and the label cube of ``helpers.head`` (value ``fill``:
    rows 5-7 of the depth axis, one in the first half); returns the raw label."""
    _, label = head(SHAPE, fill=fill)
    image = np.full(SHAPE, 100.0, np.float32)
    image[SHAPE[0] // 2:] = 200.0
    for k, channel in enumerate(BRATS.channels):
        write_image(root / name / f"{name}_{channel}.nii.gz", image * (k + 1))
    write_image(root / name / f"{name}_seg.nii.gz", label)
    return label


def _bin(value: float) -> int:
    low, high = check.INTENSITY_RANGE
    return int(np.floor((value - low) * check.INTENSITY_BINS / (high - low)))


def test_histograms_count_every_voxel_once_in_its_bin(tmp_path):
    """Every region-of-interest voxel is counted once per channel, in the bin of its z-score
    and under its class; the class counts are those of the label files."""
    labels = [_two_level_case(tmp_path, f"c{i}", fill=(4, 1)[i]) for i in range(2)]
    report = check.check_dataset(BRATS, tmp_path, figures=True)
    assert report.problems == []
    stats = report.figures
    assert stats is not None and stats.cases == ["c0", "c1"] and stats.left_out == []
    assert stats.counts.shape == (4, 2, check.INTENSITY_BINS)
    assert (stats.counts.sum(axis=(1, 2)) == 2 * np.prod(SHAPE)).all()
    fg_low, fg_high = 2 * 9, 2 * 18  # the cube's row 5 (z = -1) and rows 6-7 (z = +1)
    expected = np.zeros((2, check.INTENSITY_BINS), np.int64)
    expected[1, _bin(-1.0)], expected[1, _bin(1.0)] = fg_low, fg_high
    half = 2 * np.prod(SHAPE) // 2
    expected[0, _bin(-1.0)], expected[0, _bin(1.0)] = half - fg_low, half - fg_high
    for channel in stats.counts:
        np.testing.assert_array_equal(channel, expected)
    classes = stats.class_table("brats")
    truth = sum(np.bincount(class_lut(BRATS)[lab].ravel(), minlength=2) for lab in labels)
    assert classes["voxels"].tolist() == truth.tolist() == [2 * np.prod(SHAPE) - 54, 54]
    assert classes[["rare", "cases_present", "cases"]].values.tolist() == [[False, 2, 2],
                                                                           [True, 2, 2]]
    table = stats.intensity_table("brats")
    assert len(table) == 4 * 2 * check.INTENSITY_BINS
    assert table.groupby("channel")["voxels"].sum().tolist() == [2 * np.prod(SHAPE)] * 4


def test_out_of_range_intensities_land_in_the_edge_bins(tmp_path):
    """A voxel beyond the histogram's range is counted in the first or last bin."""
    image, label = head(SHAPE)  # 0 outside an ellipsoid: outside the region of interest
    image[6, 7, 8] = 1e4
    for channel in BRATS.channels:
        write_image(tmp_path / "c" / f"c_{channel}.nii.gz", image)
    write_image(tmp_path / "c" / "c_seg.nii.gz", label)
    stats = check.check_dataset(BRATS, tmp_path, figures=True).figures
    assert stats is not None
    inside = int((image != 0).sum())
    assert (stats.counts.sum(axis=(1, 2)) == inside).all()
    assert (stats.counts[:, :, -1].sum(axis=1) == 1).all()


def test_data_check_lists_the_figures_of_a_good_dataset(tmp_path, capsys, monkeypatch):
    """``--figures DIR`` on a clean dataset (exit 0): the CSVs are written and every file
    listed before the verdict (drawing is stubbed here; the next test draws)."""
    import analysis.figures

    drawn = []

    def save(figure, stem):
        drawn.append(Path(stem).name)
        return [Path(f"{stem}.png"), Path(f"{stem}.svg")]

    monkeypatch.setattr(analysis.figures, "save", save)
    for i in range(2):
        _two_level_case(tmp_path / "brats", f"c{i}")
    out = tmp_path / "figures"
    assert main(["data", "check", str(tmp_path / "brats"), "--layout", "brats",
                 "--figures", str(out)]) == 0
    printed = capsys.readouterr().out
    assert drawn == ["brats-intensity", "brats-classes"]
    assert sorted(p.name for p in out.iterdir()) == ["brats-classes.csv", "brats-intensity.csv"]
    assert all(str(out / f"brats-{kind}.{suffix}") in printed
               for kind in ("intensity", "classes") for suffix in ("csv", "png", "svg"))
    assert "figures of 2 case(s)" in printed and "left out" not in printed
    assert printed.strip().endswith("passed every check")
    classes = pd.read_csv(out / "brats-classes.csv")
    assert classes["voxels"].sum() == 2 * np.prod(SHAPE)
    intensity = pd.read_csv(out / "brats-intensity.csv")
    assert intensity.groupby("channel")["voxels"].sum().tolist() == [2 * np.prod(SHAPE)] * 4


def test_a_broken_dataset_still_lists_its_problems_and_draws_its_good_cases(tmp_path, capsys):
    """Problems are listed as without ``--figures`` (exit 1); the figures hold the cases
    without a problem and name the ones left out; with no such case, none are written."""
    root = tmp_path / "brats"
    _two_level_case(root, "good")
    _two_level_case(root, "unreadable")
    (root / "unreadable" / "unreadable_flair.nii.gz").write_bytes(b"not an image")
    _two_level_case(root, "nofg", fill=2)  # oedema only: background in the tumour-core task
    out = tmp_path / "figures"
    assert main(["data", "check", str(root), "--layout", "brats", "--figures", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "2 problem(s)" in printed and "not a readable image" in printed
    assert "no foreground voxel" in printed
    assert "figures of 1 case(s)" in printed
    assert "left out of the figures: nofg (has a problem), unreadable (has a problem)" in printed
    names = [f"brats-{kind}.{suffix}" for kind in ("intensity", "classes")
             for suffix in ("csv", "png", "svg")]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert all(str(out / name) in printed for name in names)
    assert (out / "brats-intensity.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_csv(out / "brats-classes.csv")["cases"].tolist() == [1, 1]

    (root / "good" / "good_t1.nii.gz").write_bytes(b"broken too")
    (root / "nofg").rename(tmp_path / "moved")
    empty_out = tmp_path / "none"
    assert main(["data", "check", str(root), "--layout", "brats",
                 "--figures", str(empty_out)]) == 1
    assert f"figures: none written to {empty_out}: no case without a problem" in \
        capsys.readouterr().out
    assert not empty_out.exists()

    (tmp_path / "msd").mkdir()
    (tmp_path / "msd" / "dataset.json").write_text("{not json")
    assert main(["data", "check", str(tmp_path / "msd"), "--layout", "msd",
                 "--figures", str(empty_out)]) == 1
    assert "figures: none written" in capsys.readouterr().out
