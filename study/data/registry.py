"""Declared datasets: layout, channels, class mapping, rare and LCC classes, preprocessing, splits.

Nothing in the training or evaluation code hard-codes a dataset's labels; it reads them here.
Every entry is either a synthetic preset (declared in :mod:`study.data.presets`, generated on
demand by :mod:`study.data.synthetic`, written in a real layout and read back through the same
reader) or a real dataset read from a user's folder in its published layout
(:mod:`study.data.layouts`). A study's own dataset (an nnU-Net or Decathlon folder declared
inline in the study file) is not listed here: :mod:`study.data.inline` builds its
:class:`DatasetInfo` from its ``dataset.json``.

Sources of the declared values: paper 001 §V-A and Table I (BRATS, ATLAS, KiTS19, abdomen; test
counts and training counts per fraction, target spacings), its supplement 000 §F (the abdomen
rare classes 4, 5, 8-13), paper 004 §4.1 (PROMISE12: 50 training cases, 1 x 1 x 1.5 mm).
CT windows: KiTS [-79, 304] HU as in the KiTS19 U-Net that 001 uses ([18]: the 0.5/99.5
foreground percentiles); other abdominal CT the standard soft-tissue window W400/L40.

Standard library only: study files are validated against this registry without loading the
imaging stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from study.data import presets

ROI_RULES = ("nonzero", "body")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and how its cases are preprocessed.

    ``classes`` maps each class name (index order, background first) to the raw label values
    that form it; a raw value may belong to one class only. ``rare`` names the
    under-represented classes (r_k = 1), ``lcc_classes`` the classes whose prediction is
    post-processed by keeping its largest connected component (001 §V-B), or a mapping of
    those classes to the number of components kept (2 for the two kidneys).

    Preprocessing (:mod:`study.data.preprocess`): resample to ``target_spacing`` (mm, array
    axis order [D, H, W]; ``"median"`` = the per-axis median of the dataset's spacings;
    ``None`` = keep each case's own), clip intensities to ``clip`` (CT windows), z-score every
    channel with the mean and std inside the region of interest and crop to the ROI's bounding
    box. ``roi`` is ``"nonzero"`` (skull-stripped MR: any channel != 0; 0 outside after
    normalisation) or ``"body"`` (CT: channel 0 above ``body_threshold`` with holes filled).

    ``test_cases`` is the papers' test-set size and ``train_counts`` the papers' training
    cases per fraction, used when the training pool has exactly ``train_counts[1.0]`` cases
    (:func:`study.data.splits.split`).
    """

    name: str
    layout: str
    channels: tuple[str, ...]
    classes: Mapping[str, tuple[int, ...]]
    rare: tuple[str, ...]
    lcc_classes: tuple[str, ...] | Mapping[str, int]
    target_spacing: tuple[float, float, float] | str | None = (1.0, 1.0, 1.0)
    roi: str = "nonzero"
    body_threshold: float = -500.0
    clip: tuple[float, float] | None = None
    test_cases: int | None = None
    train_counts: Mapping[float, int] = field(default_factory=dict)
    description: str = ""
    synthetic: bool = False
    synthetic_defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.roi not in ROI_RULES:
            raise ValueError(f"{self.name}: roi must be one of {ROI_RULES}, got {self.roi!r}")
        seen: dict[int, str] = {}
        for name, values in self.classes.items():
            for value in values:
                if value in seen:
                    raise ValueError(f"{self.name}: raw label {value} is in both {seen[value]!r}"
                                     f" and {name!r}")
                seen[value] = name
        unknown = (set(self.rare) | set(self.lcc_classes)) - set(self.classes)
        if unknown:
            raise ValueError(f"{self.name}: rare/lcc classes {sorted(unknown)} are not classes")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.classes)

    @property
    def raw_labels(self) -> frozenset[int]:
        return frozenset(v for values in self.classes.values() for v in values)

    def rare_vector(self) -> list[float]:
        """r: 1 for rare classes, 0 otherwise (001 §IV, 000 §F)."""
        return [1.0 if name in self.rare else 0.0 for name in self.classes]

    def validate_synthetic(self, params: Mapping[str, Any], key: str = "synthetic") -> dict:
        """Generator parameters with defaults filled in (numbers typed like the defaults).

        Raises ``ValueError`` naming the parameter under the dotted ``key`` where it was
        written: ``"<key>.size: unknown generator parameter (known: ...)"`` or
        ``"<key>: cases: expected an integer >= 2, got 1"``.
        """
        merged = dict(self.synthetic_defaults)
        for name, value in params.items():
            if name not in merged:
                raise ValueError(f"{key}.{name}: unknown generator parameter "
                                 f"(known: {', '.join(merged)})")
            merged[name] = _like(merged[name], value)
        try:
            presets.check_params(self.name, merged)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from error
        return merged


def _like(default: Any, value: Any) -> Any:
    """``value`` with the number type of ``default`` (elementwise for lists), so that ``12``
    and ``12.0`` give the same trial identity; anything else is returned unchanged for the
    generator's own checks to judge."""
    if isinstance(default, list) and isinstance(value, list) and len(default) == len(value):
        return [_like(d, v) for d, v in zip(default, value, strict=True)]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, float) and is_number:
        return float(value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) \
            and value.is_integer():
        return int(value)
    return value


def _synthetic(name: str, **declared: Any) -> DatasetInfo:
    """A synthetic preset: its layout, channels and generator defaults come from
    :mod:`study.data.presets`, its classes and preprocessing from ``declared``."""
    return DatasetInfo(name=name, layout=presets.LAYOUTS[name], channels=presets.CHANNELS[name],
                       synthetic=True, synthetic_defaults=presets.DEFAULTS[name], **declared)


_BRATS_CLASSES = {"background": (0, 2), "tumour_core": (1, 4)}
# BraTS convention: tumour core = necrotic core (1) + enhancing tumour (4); oedema (2) is
# background for the binary tumour-core task of paper 001.
_BRATS_COUNTS = {1.0: 190, 0.5: 95, 0.2: 38, 0.1: 19, 0.05: 10}  # 001 §V-A.1
_ATLAS_COUNTS = {1.0: 145, 0.5: 73, 0.4: 57, 0.3: 43}  # 001 §V-A.2 (not round(f * 145))
_KITS_COUNTS = {1.0: 140, 0.5: 70, 0.2: 28, 0.1: 14, 0.05: 7}  # 001 §V-A.4
_ABDOMEN_COUNTS = {1.0: 20, 0.25: 5}  # 001 §V-A.3
# KiTS (001 §V-B, Tables IV and XII): kidney and tumour are both post-processed; the tumour is
# one object, the kidneys are two (keeping only the largest component would delete one
# kidney and halve its DSC, while the paper's kidney DSCs with and without post-processing
# agree within 0.4 points), so the kidney keeps its two largest components.
_KITS_LCC = {"kidney": 2, "tumour": 1}
# BTCV organ labels 1-13 (Synapse multi-atlas abdomen challenge).
_BTCV_ORGANS = ("spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver",
                "stomach", "aorta", "inferior_vena_cava", "portal_and_splenic_vein", "pancreas",
                "right_adrenal_gland", "left_adrenal_gland")
# 000 §F: "we take class 4, class 5, class 8, ..., class 13 as rare classes".
_BTCV_RARE = tuple(_BTCV_ORGANS[k - 1] for k in (4, 5, 8, 9, 10, 11, 12, 13))

DATASETS: dict[str, DatasetInfo] = {
    # ---- synthetic presets (the embedded default; no data needed) ----
    "synthetic-brats": _synthetic(
        "synthetic-brats", classes=_BRATS_CLASSES, rare=("tumour_core",),
        lcc_classes=("tumour_core",),
        description="4-channel MR-like brains, 1-3 small irregular tumours (BRATS-like)",
    ),
    "synthetic-atlas": _synthetic(
        "synthetic-atlas", classes={"background": (0,), "lesion": (1,)}, rare=("lesion",),
        lcc_classes=("lesion",),
        description="1-channel T1-like brains, stroke-like lesions overlapping tissue intensities",
    ),
    "synthetic-kits": _synthetic(
        "synthetic-kits", classes={"background": (0,), "kidney": (1,), "tumour": (2,)},
        rare=("tumour",), lcc_classes=_KITS_LCC, target_spacing=(3.2, 1.6, 1.6), roi="body",
        clip=(-79.0, 304.0),
        description="CT-like abdomens (HU), two kidneys, a kidney tumour (the rare class)",
    ),
    # ---- real datasets in their published layouts ----
    "brats": DatasetInfo(
        name="brats", layout="brats", channels=("t1", "t1ce", "t2", "flair"),
        classes=_BRATS_CLASSES, rare=("tumour_core",), lcc_classes=("tumour_core",),
        test_cases=95, train_counts=_BRATS_COUNTS,
        description="BraTS 2017-2021 training data: <case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz",
    ),
    "atlas": DatasetInfo(
        name="atlas", layout="atlas", channels=("t1w",),
        classes={"background": (0,), "lesion": (1,)}, rare=("lesion",), lcc_classes=("lesion",),
        test_cases=75, train_counts=_ATLAS_COUNTS,
        description="ATLAS stroke lesions, R1.x (*_t1w_deface_stx + *_LesionSmooth*_stx) or "
                    "2.0 BIDS (*_T1w + *_label-L_desc-T1lesion_mask)",
    ),
    "kits19": DatasetInfo(
        name="kits19", layout="kits19", channels=("ct",),
        classes={"background": (0,), "kidney": (1,), "tumour": (2,)}, rare=("tumour",),
        lcc_classes=_KITS_LCC, target_spacing=(3.2, 1.6, 1.6), roi="body",
        clip=(-79.0, 304.0), test_cases=70, train_counts=_KITS_COUNTS,
        description="KiTS19: case_XXXXX/imaging.nii.gz, segmentation.nii.gz (0/1 kidney/2 tumour)",
    ),
    "btcv": DatasetInfo(
        name="btcv", layout="btcv", channels=("ct",),
        classes={"background": (0,), **{o: (k,) for k, o in enumerate(_BTCV_ORGANS, 1)}},
        rare=_BTCV_RARE, lcc_classes=_BTCV_ORGANS, target_spacing=(2.0, 2.0, 2.0), roi="body",
        clip=(-160.0, 240.0), test_cases=10, train_counts=_ABDOMEN_COUNTS,
        description="BTCV abdomen (13 organs): img/imgXXXX.nii.gz, label/labelXXXX.nii.gz",
    ),
    "promise12": DatasetInfo(
        name="promise12", layout="promise12", channels=("t2",),
        classes={"background": (0,), "prostate": (1,)}, rare=("prostate",),
        lcc_classes=("prostate",), target_spacing=(1.5, 1.0, 1.0),
        description="PROMISE12 prostate T2 MR: CaseXX.mhd, CaseXX_segmentation.mhd (004 §4.1)",
    ),
    # Medical Segmentation Decathlon tasks: imagesTr/, labelsTr/, dataset.json (4-D images
    # for multi-modal tasks). Channel names are the dataset.json modality names; the layout
    # checks that dataset.json agrees with what is declared here.
    "msd-brain": DatasetInfo(
        name="msd-brain", layout="msd", channels=("FLAIR", "T1w", "t1gd", "T2w"),
        classes={"background": (0, 1), "tumour_core": (2, 3)}, rare=("tumour_core",),
        lcc_classes=("tumour_core",),
        description="MSD Task01_BrainTumour, binary tumour core (non-enhancing 2 + enhancing 3)",
    ),
    "msd-prostate": DatasetInfo(
        name="msd-prostate", layout="msd", channels=("T2", "ADC"),
        classes={"background": (0,), "peripheral_zone": (1,), "transition_zone": (2,)},
        rare=("peripheral_zone",), lcc_classes=("transition_zone",), target_spacing="median",
        description="MSD Task05_Prostate (T2 + ADC, 4-D), PZ/TZ",
    ),
    "msd-pancreas": DatasetInfo(
        name="msd-pancreas", layout="msd", channels=("CT",),
        classes={"background": (0,), "pancreas": (1,), "tumour": (2,)}, rare=("tumour",),
        lcc_classes=("pancreas",), target_spacing="median", roi="body", clip=(-160.0, 240.0),
        description="MSD Task07_Pancreas, pancreas + tumour",
    ),
    "msd-spleen": DatasetInfo(
        name="msd-spleen", layout="msd", channels=("CT",),
        classes={"background": (0,), "spleen": (1,)}, rare=("spleen",),
        lcc_classes=("spleen",), target_spacing="median", roi="body", clip=(-160.0, 240.0),
        description="MSD Task09_Spleen",
    ),
}
