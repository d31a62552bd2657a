"""The rare-class vector ``r`` of 001 §IV (one entry per class, in [0, 1])."""

from __future__ import annotations

from collections.abc import Iterable


def rare_vector(num_classes: int, rare_classes: Iterable[int] | None = None) -> tuple[float, ...]:
    """Return the rare-class vector ``r`` of 001 §IV-A as a tuple of ``num_classes`` floats.

    Default (``rare_classes=None``): ``r_0 = 0`` for the background and ``r_j = 1`` for every
    foreground class, as in 001 ("r_j as 1 for the foreground samples and 0 for the
    background"). With ``rare_classes``: 1 for the named classes, 0 elsewhere (multi-class
    studies, 000 §F: abdomen ``r = [0,0,0,0,1,1,0,0,1,1,1,1,1]`` over the 13 organ classes).

    Raises ``ValueError`` for ``num_classes < 2`` or a class index outside ``0..C-1``.

    Example::

        >>> rare_vector(3)
        (0.0, 1.0, 1.0)
        >>> rare_vector(3, rare_classes=[2])      # KiTS: tumour only
        (0.0, 0.0, 1.0)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if rare_classes is None:
        return (0.0,) + (1.0,) * (num_classes - 1)
    r = [0.0] * num_classes
    for k in rare_classes:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < num_classes:
            raise ValueError(
                f"rare_classes must hold class indices in 0..{num_classes - 1}, got {k!r}"
            )
        r[k] = 1.0
    return tuple(r)
