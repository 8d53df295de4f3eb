"""What the reader tests share: the public label tables torchxrayvision ships (read as files, never imported: it
needs torchvision), its own SIIM decoder as an independent reference, and the catalog as the tests read it."""

from __future__ import annotations

import ast
import gzip
import importlib.util
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import rows
from scipy import ndimage

from medloom.imaging import rle_decode


def xrv_data() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchxrayvision (its public label tables) is not installed")
    return Path(spec.submodule_search_locations[0]) / "data"


def table_lines(name: str) -> list[str]:
    """The lines of one of torchxrayvision's tables, as published."""
    path = xrv_data() / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            text = z.read(z.namelist()[0]).decode()
    else:
        text = gzip.decompress(path.read_bytes()).decode()
    return text.splitlines()


def records(loom: Path) -> dict[str, dict]:
    return {r["uri"]: r for r in rows(loom, "SELECT * FROM records")}


def quarantine(loom: Path) -> list[tuple]:
    return sorted((q["path"], q["reason"], q["scope"]) for q in rows(loom, "SELECT * FROM quarantine"))


def boxes(rec: dict) -> list[tuple[str, list[float]]]:
    return sorted((r["label"], [round(v, 6) for v in r["bbox"]]) for r in rec["rois"])


def norm(box: list[float], w: int, h: int) -> list[float]:
    return [round(box[0] / w, 6), round(box[1] / h, 6), round(box[2] / w, 6), round(box[3] / h, 6)]


def reference_rle2mask():
    """torchxrayvision's own SIIM decoder (a function nested in its SIIM dataset), taken from the installed
    source with `ast` and run with numpy alone: an independent reference for the relative column-major form."""
    source_text = (xrv_data().parent / "datasets.py").read_text()
    node = next(n for n in ast.walk(ast.parse(source_text)) if isinstance(n, ast.FunctionDef) and n.name == "rle2mask")
    scope: dict = {"np": np}
    exec(textwrap.dedent(ast.get_source_segment(source_text, node)), scope)
    return scope["rle2mask"]


def roi_masks(rec: dict) -> dict[str, np.ndarray]:
    """The record's ROIs joined per label, from their stored (COCO, column-major) RLE counts."""
    out: dict[str, np.ndarray] = {}
    for roi in rec["rois"]:
        mask = rle_decode(roi["rle"], rec["height"], rec["width"])
        out[roi["label"]] = out[roi["label"]] | mask if roi["label"] in out else mask
    return out


def regions(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=np.ones((3, 3), bool))[1]


def save_array(path: Path, array: np.ndarray, **kw) -> None:
    """An image or mask array written where the layout puts it (folders made)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def roi_rows(loom: Path) -> dict[str, list[tuple]]:
    """uri -> [(label, bbox in pixels)] from the catalog."""
    got = {}
    for g in rows(loom, "SELECT uri, width, height, rois FROM records"):
        scale = [g["width"], g["height"]] * 2
        got[g["uri"]] = sorted((r["label"], [round(v * k) for v, k in zip(r["bbox"], scale)]) for r in g["rois"])
    return got
