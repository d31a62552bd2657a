"""Synthetic data, the SimpleITK loader's checks, nested splits and balanced sampling."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from study.data import loader, sampling, splits, synthetic
from study.data.registry import DATASETS

INFO = DATASETS["synthetic-brats"]
PARAMS = {**synthetic.DEFAULTS, "cases": 4, "shape": [24, 24, 24], "seed": 3}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic.ensure_generated(PARAMS, tmp_path_factory.mktemp("ds") / "synthetic")


def test_generation_is_deterministic_and_imbalanced():
    """Same seed, same case; the tumour core is rare (ratio of the order of 001 Table I)."""
    a_img, a_lab = synthetic.generate_case(PARAMS, 0)
    b_img, b_lab = synthetic.generate_case(PARAMS, 0)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    labels = [synthetic.generate_case({**PARAMS, "shape": [48, 48, 48]}, i)[1] for i in range(6)]
    mean, _ = synthetic.imbalance_ratio(labels, (1, 4))
    assert 100 < mean < 5000
    assert set(np.unique(a_lab)) <= {0, 1, 2, 4}


def test_loader_reads_what_generator_wrote(root):
    """The BraTS layout round-trips: classes mapped (core = 1 | 4), z-scored inside the ROI."""
    case = loader.load_case(INFO, root, "Synth_0000")
    _, raw = synthetic.generate_case(PARAMS, 0)
    np.testing.assert_array_equal(case.label, np.isin(raw, (1, 4)).astype(np.uint8))
    assert case.image.shape == (4, 24, 24, 24)
    np.testing.assert_allclose(case.image[:, case.roi].mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(case.image[:, case.roi].std(axis=1), 1, atol=1e-3)


def _rewrite(path, array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_loader_names_the_bad_file(tmp_path):
    """Out-of-range labels, shape and spacing mismatches and garbage files name the file."""
    root = synthetic.ensure_generated(PARAMS, tmp_path / "ds")
    folder = root / "Synth_0001"
    seg = folder / "Synth_0001_seg.nii.gz"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(seg)))
    labels[0, 0, 0] = 7
    _rewrite(seg, labels)
    with pytest.raises(loader.DataError, match=r"Synth_0001_seg.nii.gz: label values \[7\]"):
        loader.load_case(INFO, root, "Synth_0001")
    flair = folder / "Synth_0001_flair.nii.gz"
    _rewrite(flair, np.zeros((24, 24, 20), np.float32))
    with pytest.raises(loader.DataError, match=r"Synth_0001_flair.nii.gz: shape"):
        loader.load_case(INFO, root, "Synth_0001")
    _rewrite(flair, np.zeros((24, 24, 24), np.float32), spacing=(1.0, 1.0, 2.0))
    with pytest.raises(loader.DataError, match=r"Synth_0001_flair.nii.gz: spacing"):
        loader.load_case(INFO, root, "Synth_0001")
    flair.write_bytes(b"not an image")
    with pytest.raises(loader.DataError, match=r"Synth_0001_flair.nii.gz: not a readable"):
        loader.load_case(INFO, root, "Synth_0001")
    with pytest.raises(loader.DataError, match=r"file not found"):
        loader.load_case(INFO, root, "Synth_9999")


def test_splits_are_fixed_nested_and_never_empty():
    """Test set independent of the fraction; smaller fractions are subsets of larger ones."""
    ids = [f"c{i:03d}" for i in range(200)]
    test_a, test_b = splits.split(ids, 10, 0.05)[1], splits.split(ids[::-1], 10, 1.0)[1]
    assert test_a == test_b
    previous: set[str] = set()
    for fraction in (0.05, 0.1, 0.2, 0.5, 1.0):
        train, test = splits.split(ids, 10, fraction)
        assert len(train) == round(fraction * 190) and not set(train) & set(test)
        assert previous <= set(train)
        previous = set(train)
    with pytest.raises(ValueError, match="rounds to zero cases"):
        splits.split(ids, 10, 0.001)


def test_sampler_centres_the_requested_share_on_foreground(root):
    """About fg_fraction of patches have a foreground centre voxel (DeepMedic's 50/50)."""
    cases = [loader.load_case(INFO, root, c) for c in loader.list_cases(INFO, root)]
    sampler = sampling.PatchSampler(cases, (9, 9, 9), fg_fraction=0.5, seed=0)
    _, labels = sampler.sample(400)
    centre_fg = (labels[:, 4, 4, 4] > 0).mean()
    assert 0.4 < centre_fg < 0.65
    state = sampler.state()
    first = sampler.sample(3)
    sampler.set_state(state)
    np.testing.assert_array_equal(first[0], sampler.sample(3)[0])
