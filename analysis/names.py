"""How the report names datasets, models and classes (methods and hyperparameters are named
by ``study.catalog``): ``synthetic-kits`` -> ``synthetic KiTS``, ``unet-tiny`` -> ``3D U-Net
(tiny)``, ``tumour_core`` -> ``tumour core``, the datasets as their challenges spell them
(001 §V-A: BraTS, ATLAS, KiTS19; 004: PROMISE12)."""

from __future__ import annotations

# Dataset name parts that are acronyms, as their challenges write them.
DATASET_WORDS = {"brats": "BraTS", "atlas": "ATLAS", "kits": "KiTS", "kits19": "KiTS19",
                 "btcv": "BTCV", "promise12": "PROMISE12", "msd": "MSD"}
# Model names (the ``model`` column is ``<name>-<preset>``).
MODELS = {"unet": "3D U-Net", "deepmedic": "DeepMedic"}

__all__ = ["class_label", "dataset_name", "model_name"]


def dataset_name(dataset: str) -> str:
    """``synthetic-brats`` -> ``synthetic BraTS``, ``msd-prostate`` -> ``MSD prostate``."""
    return " ".join(DATASET_WORDS.get(word.lower(), word) for word in str(dataset).split("-"))


def model_name(model: str) -> str:
    """``unet-tiny`` -> ``3D U-Net (tiny)``, ``deepmedic-basic`` -> ``DeepMedic (basic)``; an
    unknown name is kept."""
    name, _, preset = str(model).partition("-")
    name = MODELS.get(name, name)
    return f"{name} ({preset})" if preset else name


def class_label(class_name: str) -> str:
    """``tumour_core`` -> ``tumour core``."""
    return str(class_name).replace("_", " ")
