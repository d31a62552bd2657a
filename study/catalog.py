"""The vocabulary of study files, defined once and without torch: the techniques (their method
names as the papers print them, symmetry and hyperparameters), the hyperparameters (their
symbols and Parquet columns), how the papers print a setting, and the names of the training
regimes an experiment chooses (augmentation, patch sampling, update rule, mixup λ form).

Imported by the study spec (validation), the trial expansion (labels), the technique builders
(:mod:`study.techniques`, which add the losses), the results schema (``hp_*`` columns) and
the analysis (table headers); nothing here imports torch, NumPy or the data stack.

Papers: 001 §IV (asymmetric large margin eq. 4-9, focal eq. 10-13, adversarial eq. 14-16,
mixup eq. 17-19, augmentation eq. 20-21, their combination eq. 22), 001 Table II (region
losses F1-F8), 003 eq. 27-29 (margin calibration), 004 (DSC / Jaccard losses, re-weighted CE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Hyperparameter:
    """One sweep axis: its name (the study files' key; Parquet column ``hp_<name>``), the
    symbol the papers print and what it is."""

    name: str
    symbol: str
    meaning: str

    @property
    def column(self) -> str:
        return f"{HP_PREFIX}{self.name}"


HP_PREFIX = "hp_"
HYPERPARAMETERS: dict[str, Hyperparameter] = {h.name: h for h in (
    Hyperparameter("m", "m", "large margin (001 eq. 4-9)"),
    Hyperparameter("gamma", "γ", "focal exponent (001 eq. 10-13)"),
    Hyperparameter("eps", "ε", "random start of the adversarial direction (001 eq. 14-16)"),
    Hyperparameter("l", "l", "L2 norm of the adversarial perturbation (001 eq. 14-16)"),
    Hyperparameter("mixup_m", "m", "asymmetric mixup margin (001 eq. 19)"),
    Hyperparameter("mixup_alpha", "α", "mixup Beta(α, α) parameter (001 eq. 17-18)"),
    Hyperparameter("tau", "τ", "margin calibration scale (003 Cor. 1.1)"),
    Hyperparameter("nu", "ν", "margin calibration offset (003 Cor. 1.1)"),
    Hyperparameter("bg_aug_prob", "p", "probability of augmenting a background sample "
                   "(001 eq. 21)"),
    Hyperparameter("beta", "β", "F-beta weight of recall (001 Table II)"),
)}
HP_COLUMNS: tuple[str, ...] = tuple(h.column for h in HYPERPARAMETERS.values())
# Hyperparameters that only mean something together (adversarial eq. 14-16, mixup eq. 17-19).
PAIRED: tuple[tuple[str, ...], ...] = (("eps", "l"), ("mixup_m", "mixup_alpha"))


@dataclass(frozen=True)
class Technique:
    """A technique id: the method name of the papers' tables, its symmetry, the
    hyperparameters it must (``required``) and may (``optional``) be given; a combination
    (only optional ones) needs at least one. ``family`` names its builder in
    :mod:`study.techniques`: ``regularized`` (the model's baseline loss with margin, focal,
    adversarial, mixup and augmentation), ``region`` (a region loss alone), ``calibration``,
    ``reweighted`` (CE weighted by the training set's inverse class frequencies)."""

    id: str
    method: str
    family: str
    asymmetric: bool = False
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)

    @property
    def combination(self) -> bool:
        return bool(self.optional) and not self.required

    def check(self, hp: Mapping[str, float]) -> None:
        """Raise ``ValueError`` naming an unknown or missing hyperparameter, half a pair
        (``eps`` without ``l``) or a combination of nothing."""
        known = ", ".join(self.hyperparameters) or "none"
        unknown = sorted(set(hp) - set(self.hyperparameters))
        missing = [k for k in self.required if k not in hp]
        if unknown or missing:
            problem = f"unknown {unknown}" if unknown else f"missing {missing}"
            raise ValueError(f"technique {self.id}: hyperparameters {problem} (takes: {known})")
        if self.combination and not hp:
            raise ValueError(f"technique {self.id}: combines nothing; give at least one of "
                             f"{known} (with none it is vanilla)")
        for pair in PAIRED:
            group = [k for k in pair if k in self.hyperparameters]
            given = [k for k in group if k in hp]
            if given and len(given) < len(group):
                raise ValueError(f"technique {self.id}: {' and '.join(group)} go together, "
                                 f"got only {', '.join(given)}")


_REGULARIZERS = ("m", "gamma", "eps", "l", "mixup_m", "mixup_alpha", "bg_aug_prob")
TECHNIQUES: dict[str, Technique] = {t.id: t for t in (
    Technique("vanilla", "Vanilla", "regularized"),
    Technique("large_margin", "Large margin loss", "regularized", False, ("m",)),
    Technique("asym_large_margin", "Asymmetric large margin loss", "regularized", True, ("m",)),
    Technique("focal", "Focal loss", "regularized", False, ("gamma",)),
    Technique("asym_focal", "Asymmetric focal loss", "regularized", True, ("gamma",)),
    Technique("adversarial", "Adversarial training", "regularized", False, ("eps", "l")),
    Technique("asym_adversarial", "Asymmetric adversarial training", "regularized", True,
              ("eps", "l")),
    Technique("mixup", "Mixup", "regularized", False, ("mixup_alpha",)),
    Technique("asym_mixup", "Asymmetric mixup", "regularized", True,
              ("mixup_m", "mixup_alpha")),
    Technique("asym_augmentation", "Asymmetric augmentation", "regularized", True,
              ("bg_aug_prob",)),
    Technique("margin_calibration", "Margin calibration", "calibration",
              required=("tau", "nu")),
    # symmetric mixup has no margin m, so mixup_m belongs to the asymmetric combination only
    Technique("combination", "Symmetric combination", "regularized", False,
              optional=tuple(k for k in _REGULARIZERS if k != "mixup_m")),
    Technique("asym_combination", "Asymmetric combination", "regularized", True,
              optional=_REGULARIZERS),
    Technique("dsc", "DSC loss", "region"),
    Technique("dsc_squared", "DSC loss (squared)", "region"),
    Technique("jaccard", "Jaccard loss", "region"),
    Technique("f_beta", "F-beta loss", "region", required=("beta",)),
    Technique("reweighted_ce", "Re-weighted CE", "reweighted"),
)}
"""Technique id -> :class:`Technique`, in the papers' row order (001 Tables II-IV)."""


# Training regimes a study may name (what each means: the modules that implement them).
AUGMENTATION_REGIMES = ("none", "deepmedic", "nnunet")  # study.data.augmentation
SAMPLING_SCHEMES = ("balanced", "nnunet", "per_class")  # study.data.sampling
UPDATE_RULES = ("summed", "sequential")  # study.objectives.schedule
MIXUP_LAMBDAS = ("paper", "code")  # study.objectives.mixup
# The case sets a trial evaluates (the ``split`` column of the results): the test set the
# papers' tables report, and cases held out of the training pool for choosing settings.
TEST, VALIDATION = "test", "validation"
SPLITS = (TEST, VALIDATION)


def technique(name: str) -> Technique:
    """The technique ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in TECHNIQUES:
        raise ValueError(f"technique: unknown {name!r} (known: {', '.join(TECHNIQUES)})")
    return TECHNIQUES[name]


def format_number(value: float) -> str:
    """How the papers print numbers: ``2.0`` -> ``2``, ``0.0001`` -> ``1e-4``."""
    text = f"{value:.6e}" if 0 < abs(value) < 1e-3 else f"{value:.6g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def param_label(hp: Mapping[str, float], shown: Sequence[str] | None = None) -> str:
    """The setting as the papers print it: ``γ = 2``, ``ε = 1e-5 l = 10``; ``—`` if none.

    ``shown`` limits the label to the hyperparameters that vary within the technique's grid
    (the papers print ``m = 0.2`` for asymmetric mixup, not its constant α); mixup's margin is
    printed ``m_mix`` where the large margin's ``m`` is shown too.
    """
    names = [name for name in hp if shown is None or name in shown] or list(hp)
    if not names:
        return "—"
    symbols = {name: h.symbol for name, h in HYPERPARAMETERS.items()}
    if "m" in names and "mixup_m" in names:
        symbols["mixup_m"] = "m_mix"
    return " ".join(f"{symbols[name]} = {format_number(hp[name])}" for name in names)
