"""Declared datasets: class names, the raw labels forming each class, rare and LCC classes.

Nothing in the training or evaluation code hard-codes a dataset's labels; it reads them here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from study.data import synthetic


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is.

    ``classes`` maps each class name (index order, background first) to the raw label values
    that form it; a raw value may belong to one class only. ``rare`` names the
    under-represented classes (r_k = 1), ``lcc_classes`` the single-object classes for which
    largest-connected-component post-processing applies (001 §V-B).
    """

    name: str
    layout: str
    channels: tuple[str, ...]
    classes: Mapping[str, tuple[int, ...]]
    rare: tuple[str, ...]
    lcc_classes: tuple[str, ...]
    synthetic: bool = False
    synthetic_defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.classes)

    @property
    def raw_labels(self) -> frozenset[int]:
        return frozenset(v for values in self.classes.values() for v in values)

    def rare_vector(self) -> list[float]:
        """r: 1 for rare classes, 0 otherwise (001 §IV, 000 §F)."""
        return [1.0 if name in self.rare else 0.0 for name in self.classes]

    def validate_synthetic(self, params: Mapping[str, Any], source: str, key: str) -> dict:
        """Generator parameters with defaults filled in; unknown keys or bad values raise."""
        from study.spec import SpecError

        merged = dict(self.synthetic_defaults)
        for name, value in params.items():
            if name not in merged:
                raise SpecError(
                    f"{source}: {key}.{name}: unknown generator parameter "
                    f"(known: {', '.join(merged)})"
                )
            merged[name] = value
        try:
            synthetic.check_params(merged)
        except ValueError as error:
            raise SpecError(f"{source}: {key}: {error}") from error
        return merged


DATASETS: dict[str, DatasetInfo] = {
    "synthetic-brats": DatasetInfo(
        name="synthetic-brats",
        layout="brats",
        channels=("t1", "t1ce", "t2", "flair"),
        # BraTS convention: tumour core = necrotic core (1) + enhancing tumour (4); oedema (2)
        # is background for the binary tumour-core task of paper 001.
        classes={"background": (0, 2), "tumour_core": (1, 4)},
        rare=("tumour_core",),
        lcc_classes=("tumour_core",),
        synthetic=True,
        synthetic_defaults=synthetic.DEFAULTS,
    ),
}
