"""Named CT windows (center, width in Hounsfield units) and the recipe's `window:` value."""

from __future__ import annotations

PRESETS = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "soft_tissue": (50.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
}


def recipe_window(value) -> tuple[float, float, str] | None:
    """(center, width, source) from a recipe `window:` (a preset name or [center, width]); None if unset."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in PRESETS:
            raise ValueError(f"unknown window preset {value!r}; use one of {', '.join(PRESETS)} or [center, width]")
        c, w = PRESETS[value]
        return c, w, f"preset:{value}"
    c, w = value
    return float(c), float(w), "recipe"
