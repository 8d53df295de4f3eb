"""Image / mask pairs, as datasets ship them: the same name in another folder, a name pattern (globs allowed:
BUSI's `benign (1)_mask.png` and `benign (1)_mask_1.png` beside `benign (1).png`), or several masks per image,
one per label (Montgomery's `ManualMask/leftMask` and `rightMask`, EDD2020's `EDD2020_ACB0001_BE.tif`).

Masks hold {0,255} or label ids, grey values cut at a threshold (`binarize:`, for JPEG masks such as
Kvasir-SEG's), or RGB colours named by a palette (m2caiseg). The masks of one label merge; each connected
region of each label becomes an ROI with a box and an RLE mask.
"""

from __future__ import annotations

import bisect
import fnmatch
import io
import json
import os
import re

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..imaging import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, DecodeError, file_facts, mask_regions, open_image, read_file
from ..records import quarantine_row
from .base import Scan, fingerprint, image_record, is_image_file, make_task, walk_files

GLOB_CHARS = re.compile(r"[*?\[]")


class MaskSpec(BaseModel):
    """One kind of mask of an image: where it lies, how it is named, which label its pixels are."""

    model_config = ConfigDict(extra="forbid")
    dir: str | None = None  # its folder under the root (default: `masks_dir`), e.g. ManualMask/leftMask
    pattern: str | None = None  # its file name from the image's: "{stem}_BE.tif" (default: same stem, any extension)
    label: str | None = None  # every pixel other than `background` is this label (default: by value, `mask_labels`)
    values: list[int] | None = None  # with `label`: only these values are it (REFUGE: disc [0, 128], cup [0])


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images_dir: str = "images"
    masks_dir: str = "masks"  # may be `images_dir` itself, with a `mask_pattern` (masks beside their images)
    # mask file name from the image's stem, e.g. "{stem}_mask.png", globs allowed ("{stem}_mask*.png": every
    # match is a mask of the image, merged); default: same stem, any image extension
    mask_pattern: str | None = None
    masks: list[MaskSpec] | None = None  # several masks per image, each with its folder, pattern and label
    # mask value -> label name; default: 1 and 255 are `mask_label`, other values are "label_<value>"
    mask_labels: dict[int, str] | None = None
    mask_label: str = "foreground"
    background: int = 0
    min_region_pixels: int = 1
    binarize: int | None = Field(None, ge=1, le=255)  # grey value (0-255) from which a pixel is foreground
    palette: dict[str, str] | None = None  # RGB masks: {"#rrggbb": label}; black is background unless named

    @field_validator("palette")
    @classmethod
    def _colours(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        bad = [c for c in v or {} if not re.fullmatch(r"#[0-9a-fA-F]{6}", c)]
        if bad:
            raise ValueError(f"palette colours {bad} are not #rrggbb (six hexadecimal digits), e.g. '#ff0000'")
        return {c.lower(): label for c, label in v.items()} if v else v


class Folders:
    """File names per folder, listed once and sorted: a mask looked up per image costs no stat, and a glob a
    bisection to the names that start as it does."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}

    def find(self, folder: str, pattern: str) -> list[str]:
        names = self.names.get(folder)
        if names is None:
            try:
                names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and e.is_file())
            except OSError:
                names = []
            self.names[folder] = names
        if not GLOB_CHARS.search(pattern):
            i = bisect.bisect_left(names, pattern)
            return [os.path.join(folder, pattern)] if i < len(names) and names[i] == pattern else []
        prefix = GLOB_CHARS.split(pattern, 1)[0]
        hits = []
        for name in names[bisect.bisect_left(names, prefix) :]:
            if not name.startswith(prefix):
                break
            if fnmatch.fnmatchcase(name, pattern):
                hits.append(os.path.join(folder, name))
        return hits


def glob_escape(text: str) -> str:
    """A file name as a literal inside a glob (`[` in a stem would open a character set)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    root = source["root"]
    images = os.path.normpath(os.path.join(root, opts.images_dir))  # `.`: masks beside images share their paths
    specs = opts.masks or [MaskSpec(dir=opts.masks_dir, pattern=opts.mask_pattern)]
    out = Scan()
    folders = Folders()
    by_stem: dict[str, dict[str, str]] = {}  # per folder of specs without a pattern: stem -> mask
    for spec in specs:
        folder = os.path.normpath(os.path.join(root, spec.dir or opts.masks_dir))
        if spec.pattern is None and folder not in by_stem:
            index = by_stem[folder] = {}
            for p in walk_files(folder, out, source):
                if is_image_file(p):
                    index.setdefault(p.relative_to(folder).with_suffix("").as_posix(), str(p))
    candidates: list[tuple[str, list[list]]] = []
    for p in walk_files(images, out, source):
        if not is_image_file(p):
            out.filter("not an image file")
            continue
        sub, stem, found = os.path.dirname(p.relative_to(images).as_posix()), p.stem, []
        for spec in specs:
            folder = os.path.normpath(os.path.join(root, spec.dir or opts.masks_dir))
            if spec.pattern is None:
                hits = [h for h in [by_stem[folder].get(f"{sub}/{stem}" if sub else stem)] if h and h != str(p)]
            else:
                where, name = os.path.split(spec.pattern.format(stem=glob_escape(stem), name=glob_escape(p.name)))
                hits = [h for h in folders.find(os.path.normpath(os.path.join(folder, sub, where)), name) if h != str(p)]
            found += [[h, spec.label, spec.values] for h in hits]
        candidates.append((str(p), found))
    masks = {m[0] for _, found in candidates for m in found}
    for path, found in candidates:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        if path in masks:  # a mask beside its image (BUSI) is no image of its own
            out.filter("mask file")
            continue
        if not found:
            patterns = ", ".join(f"{s.dir or opts.masks_dir}/{s.pattern or '{stem}.*'}" for s in specs)
            out.quarantine.append(
                quarantine_row(
                    source["name"], rel, "missing_mask", f"no mask for {os.path.basename(path)} (looked for {patterns})"
                )
            )
            continue
        stamps = ":".join(fingerprint(m[0]) for m in found)
        out.tasks.append(make_task(source, path, extra={"masks": found}, fingerprint_extra=stamps))
    return out


def mask_names(opts: Options, values: list[int]) -> dict[int, str]:
    if opts.mask_labels is not None:
        return dict(opts.mask_labels)
    return {v: opts.mask_label if v in (1, 255) else f"label_{v}" for v in values}


def read_mask(path: str, source: dict, size: tuple[int, int]):
    """A mask file, decoded within the source's budgets, that has its image's size; else a DecodeError."""
    rel = os.path.relpath(path, source["root"])
    try:
        data = read_file(path, source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
        im = open_image(io.BytesIO(data), source.get("max_pixels") or DEFAULT_MAX_PIXELS)
    except DecodeError as e:
        raise DecodeError(f"mask_{e.reason}", f"mask {rel}: {e}") from None
    if im.size != size:
        raise DecodeError("mask_mismatch", f"mask {rel} is {im.size[0]}x{im.size[1]}, image is {size[0]}x{size[1]}")
    return im


def mask_layers(
    im, label: str | None, values: list[int] | None, opts: Options, label_map: dict
) -> tuple[dict[str, np.ndarray], str | None]:
    """One mask file as {label: pixels of that label}, and what in it has no label (a message), if anything."""
    if opts.palette is not None:
        rgb = np.asarray(im.convert("RGB")).astype(np.uint32)
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        layers: dict[str, np.ndarray] = {}
        named = {int(c[1:], 16): label_map.get(n, n) for c, n in opts.palette.items()}
        for code, name in named.items():
            hit = codes == code
            if hit.any():
                layers[name] = layers[name] | hit if name in layers else hit
        colours, counts = np.unique(codes[~np.isin(codes, [*named, *([] if 0 in named else [0])])], return_counts=True)
        if not len(colours):
            return layers, None
        shown = ", ".join(f"#{int(c):06x} ({int(n)} px)" for c, n in sorted(zip(colours, counts), key=lambda x: -x[1])[:5])
        more = f" and {len(colours) - 5} more" if len(colours) > 5 else ""
        return layers, f"{len(colours)} colour(s) not in the palette: {shown}{more}; those pixels are left out"
    grey = np.asarray(im.convert("L") if im.mode in ("RGB", "RGBA", "P", "LA") else im)
    if opts.binarize is not None:
        grey = np.where(grey >= opts.binarize, 255, 0)
    if label is not None:
        return {label_map.get(label, label): np.isin(grey, values) if values else grey != opts.background}, None
    values = [int(v) for v in np.unique(grey) if int(v) != opts.background]
    names = {v: label_map.get(n, n) for v, n in mask_names(opts, values).items()}
    layers = {}
    for value in values:
        if value in names:
            hit = grey == value
            layers[names[value]] = layers[names[value]] | hit if names[value] in layers else hit
    unknown = [v for v in values if v not in names]
    return layers, (f"mask values {unknown} have no name in `mask_labels` {names}" if unknown else None)


def decode(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    opts = Options(**source["options"])
    facts = file_facts(
        task["path"],
        source.get("max_pixels") or DEFAULT_MAX_PIXELS,
        damaged=source.get("damaged_images") or "quarantine",
        max_bytes=source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES,
    )
    found = json.loads(task["extra"])
    layers: dict[str, np.ndarray] = {}
    problems = []
    for path, label, values in found.get("masks") or [[found["mask"], None, None]]:
        im = read_mask(path, source, (facts.width, facts.height))
        more, unnamed = mask_layers(im, label, values, opts, source["label_map"])
        for name, hit in more.items():  # the masks of one label merge (BUSI's `_mask` and `_mask_1`)
            layers[name] = layers[name] | hit if name in layers else hit
        if unnamed:
            problems.append(
                quarantine_row(
                    source["name"],
                    task["uri"],
                    "colour_outside_palette" if opts.palette is not None else "label_outside_space",
                    f"mask {os.path.relpath(path, source['root'])}: {unnamed}",
                    stage="decode",
                    scope="annotation",
                    record_id=task["id"],
                )
            )
    rois = []
    for name, hit in layers.items():
        rois += mask_regions(hit.astype(np.uint8), {1: name}, 0, opts.min_region_pixels)[0]
    labels = sorted({r["label"] for r in rois})
    if facts.warning:
        problems.append(
            quarantine_row(
                source["name"], task["uri"], "damaged_kept", facts.warning, stage="decode", scope="warning", record_id=task["id"]
            )
        )
    return [image_record(task, facts, rois=rois, labels=labels, file_hash=facts.file_hash)], problems
