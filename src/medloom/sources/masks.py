"""Image / mask pairs, as datasets ship them: the same name in another folder, a name pattern (globs allowed:
BUSI's `benign (1)_mask.png` and `benign (1)_mask_1.png` beside `benign (1).png`), or several masks per image,
one per label (Montgomery's `ManualMask/leftMask` and `rightMask`, EDD2020's `EDD2020_ACB0001_BE.tif`).

Masks hold {0,255} or label ids, grey values cut at a threshold (`binarize:`, for JPEG masks such as
Kvasir-SEG's), grey values snapped to the nearest declared one (`snap:`, multi-class JPEG masks such as
SICAPv2's Gleason grades), or RGB colours named by a palette (m2caiseg). The masks of one label merge; each
connected region of each label becomes an ROI with a box and an RLE mask. An image may also have a class of
its own, read from its folder or name (`image_labels:`: BUSI's benign/malignant/normal folders).
"""

from __future__ import annotations

import bisect
import fnmatch
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..imaging import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, DecodeError, file_facts, mask_regions, open_image, read_file
from ..records import quarantine_row
from .base import (
    Scan,
    check_label,
    fingerprint,
    image_record,
    is_image_file,
    make_task,
    source_record_id,
    walk_files,
)

GLOB_CHARS = re.compile(r"[*?\[]")


class MaskSpec(BaseModel):
    """One kind of mask of an image: where it lies, how it is named, which label its pixels are."""

    model_config = ConfigDict(extra="forbid")
    dir: str | None = None  # its folder under the root (default: `masks_dir`), e.g. ManualMask/leftMask
    pattern: str | None = None  # its file name from the image's: "{stem}_BE.tif" (default: same stem, any extension)
    label: str | None = None  # every pixel other than `background` is this label (default: by value, `mask_labels`)
    values: list[int] | None = None  # with `label`: only these values are it (REFUGE: disc [0, 128], cup [0])


class Snap(BaseModel):
    """Lossy multi-class masks: each grey value goes to the nearest declared value within `tolerance`; pixels
    farther from every declared value are left out, and past `max_far` of the mask they are a warning row."""

    model_config = ConfigDict(extra="forbid")
    values: list[int] = Field(min_length=2)  # the values the dataset wrote, background included: [0, 3, 4, 5]
    tolerance: int = Field(16, ge=0, le=255)  # farther than this from every value: not snapped, left out
    max_far: float = Field(0.01, ge=0, le=1)  # share of the mask's pixels that may be far before a warning row
    # each connected region of non-background pixels takes its most frequent value: for values a few grey
    # levels apart (SICAPv2's 3, 4, 5), which JPEG noise mixes inside a region
    per_region: bool = False

    @model_validator(mode="before")
    @classmethod
    def _list(cls, v: object) -> object:
        return {"values": v} if isinstance(v, list) else v


class ImageLabels(BaseModel):
    """The image's own class, from its path or name: a regex with a named group `label`."""

    model_config = ConfigDict(extra="forbid")
    pattern: str
    match: str = Field("path", pattern="^(path|name)$")  # the path from the source's root, or the file name

    @field_validator("pattern")
    @classmethod
    def _label_group(cls, v: str) -> str:
        try:
            groups = re.compile(v).groupindex
        except re.error as e:
            raise ValueError(f"image_labels pattern {v!r} is not a regular expression: {e}") from None
        if "label" not in groups:
            raise ValueError(f"image_labels pattern {v!r} has no group named label; write (?P<label>...)")
        return v


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
    snap: Snap | None = None  # lossy multi-class grey masks: values snapped to the nearest declared one
    image_labels: ImageLabels | None = None  # the image's class from its folder or name (a regex)

    @field_validator("palette")
    @classmethod
    def _colours(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        bad = [c for c in v or {} if not re.fullmatch(r"#[0-9a-fA-F]{6}", c)]
        if bad:
            raise ValueError(f"palette colours {bad} are not #rrggbb (six hexadecimal digits), e.g. '#ff0000'")
        return {c.lower(): label for c, label in v.items()} if v else v

    @model_validator(mode="after")
    def _one_reading(self) -> Options:
        given = [k for k in ("binarize", "snap", "palette") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of binarize, snap, palette (a mask is read one way), not {' and '.join(given)}")
        return self


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
    return pair(source, Options(**source["options"]), is_image_file)


def pair(source: dict, opts: Options, is_input: Callable[[Path], bool]) -> Scan:
    """Each input file under `images_dir` (those `is_input` accepts: image files, or DICOM files for
    `dicom_masks`) with its masks, as tasks; an input without one, or without its class, is a quarantine row."""
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
                if is_input(p):
                    index.setdefault(p.relative_to(folder).with_suffix("").as_posix(), str(p))
    candidates: list[tuple[str, list[list]]] = []
    for p in walk_files(images, out, source):
        if not is_input(p):
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
    classes = re.compile(opts.image_labels.pattern) if opts.image_labels else None
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
        labels = []
        if classes is not None and opts.image_labels is not None:
            hit = classes.search(os.path.basename(path) if opts.image_labels.match == "name" else rel)
            if hit is None or not hit.group("label"):
                out.quarantine.append(
                    quarantine_row(
                        source["name"],
                        rel,
                        "name_not_matched",
                        f"the image's {opts.image_labels.match} does not match the image_labels pattern "
                        f"{opts.image_labels.pattern!r}, so its class is unknown; fix the pattern or `exclude:` the file",
                    )
                )
                continue
            label = source["label_map"].get(hit.group("label"), hit.group("label"))
            problem = check_label(source, rel, source_record_id(source, rel), label)
            if problem:
                out.quarantine.append(problem)
            else:
                labels.append(label)
        stamps = ":".join(fingerprint(m[0]) for m in found)
        out.tasks.append(make_task(source, path, labels=labels, extra={"masks": found}, fingerprint_extra=stamps))
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
) -> tuple[dict[str, np.ndarray], list[tuple[str, str, str]]]:
    """One mask file as {label: pixels of that label}, and what in it has no label or no near value, as
    (reason, message, scope) each."""
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
            return layers, []
        shown = ", ".join(f"#{int(c):06x} ({int(n)} px)" for c, n in sorted(zip(colours, counts), key=lambda x: -x[1])[:5])
        more = f" and {len(colours) - 5} more" if len(colours) > 5 else ""
        message = f"{len(colours)} colour(s) not in the palette: {shown}{more}; those pixels are left out"
        return layers, [("colour_outside_palette", message, "annotation")]
    grey = np.asarray(im.convert("L") if im.mode in ("RGB", "RGBA", "P", "LA") else im)
    return value_layers(grey, label, values, opts, label_map)


def snap_values(grey: np.ndarray, snap: Snap, background: int) -> tuple[np.ndarray, str | None]:
    """Every value moved to the nearest declared one; values farther than the tolerance become `background`.
    Also a message when the far pixels pass `max_far` of the mask."""
    declared = np.array(sorted(set(snap.values)), np.int64)
    seen, inverse = np.unique(grey, return_inverse=True)
    distance = np.abs(seen.astype(np.int64)[:, None] - declared[None, :])
    nearest = declared[distance.argmin(axis=1)]
    far = distance.min(axis=1) > snap.tolerance
    snapped = np.where(far, background, nearest)[inverse].reshape(grey.shape)
    if snap.per_region:
        snapped = region_majority(snapped, [int(v) for v in declared if v != background], background)
    far_pixels = int(np.isin(grey, seen[far]).sum()) if far.any() else 0
    if far_pixels <= snap.max_far * grey.size:
        return snapped, None
    shown = ", ".join(str(int(v)) for v in seen[far][:8]) + (" ..." if far.sum() > 8 else "")
    return snapped, (
        f"{far_pixels} of {grey.size} pixels ({far_pixels / grey.size:.1%}) are more than {snap.tolerance} grey "
        f"levels from every value in `snap` {snap.values} (values {shown}); they are left out: check the values, "
        "or raise `tolerance`"
    )


def region_majority(snapped: np.ndarray, values: list[int], background: int) -> np.ndarray:
    """Each connected region (8-connectivity) of non-background pixels set to its most frequent value."""
    from scipy import ndimage

    labelled, n = ndimage.label(snapped != background, structure=np.ones((3, 3), bool))
    if not n or not values:
        return snapped
    index = np.arange(1, n + 1)
    counts = np.stack([ndimage.sum(snapped == v, labelled, index) for v in values])
    table = np.concatenate([[background], np.array(values)[counts.argmax(axis=0)]])
    return table[labelled]


def value_layers(
    grey: np.ndarray, label: str | None, values: list[int] | None, opts: Options, label_map: dict
) -> tuple[dict[str, np.ndarray], list[tuple[str, str, str]]]:
    """A mask's values (grey levels, label ids, a DICOM mask's stored values) as {label: pixels}; see
    `mask_layers`."""
    problems = []
    if opts.binarize is not None:
        grey = np.where(grey >= opts.binarize, 255, 0)
    elif opts.snap is not None:
        grey, far = snap_values(grey, opts.snap, opts.background)
        if far:
            problems.append(("mask_values_off", far, "warning"))
    if label is not None:
        return {label_map.get(label, label): np.isin(grey, values) if values else grey != opts.background}, problems
    values = [int(v) for v in np.unique(grey) if int(v) != opts.background]
    names = {v: label_map.get(n, n) for v, n in mask_names(opts, values).items()}
    layers = {}
    for value in values:
        if value in names:
            hit = grey == value
            layers[names[value]] = layers[names[value]] | hit if names[value] in layers else hit
    unknown = [v for v in values if v not in names]
    if unknown:
        problems.append(("label_outside_space", f"mask values {unknown} have no name in `mask_labels` {names}", "annotation"))
    return layers, problems


def problem_rows(task: dict, source: dict, path: str, problems: list[tuple[str, str, str]]) -> list[dict]:
    rel = os.path.relpath(path, source["root"])
    return [
        quarantine_row(
            source["name"], task["uri"], reason, f"mask {rel}: {message}", stage="decode", scope=scope, record_id=task["id"]
        )
        for reason, message, scope in problems
    ]


def merge(layers: dict[str, np.ndarray], more: dict[str, np.ndarray]) -> None:
    """The masks of one label merge (BUSI's `_mask` and `_mask_1`)."""
    for name, hit in more.items():
        layers[name] = layers[name] | hit if name in layers else hit


def regions(layers: dict[str, np.ndarray], task: dict, opts: Options) -> tuple[list[dict], list[str]]:
    """Each connected region of each label as an ROI, and the record's labels: the image's own class (from
    `image_labels`) and its ROIs' labels."""
    rois = []
    for name, hit in layers.items():
        rois += mask_regions(hit.astype(np.uint8), {1: name}, 0, opts.min_region_pixels)[0]
    return rois, sorted({*task["labels"], *(r["label"] for r in rois)})


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
        more, bad = mask_layers(im, label, values, opts, source["label_map"])
        merge(layers, more)
        problems += problem_rows(task, source, path, bad)
    rois, labels = regions(layers, task, opts)
    if facts.warning:
        problems.append(
            quarantine_row(
                source["name"], task["uri"], "damaged_kept", facts.warning, stage="decode", scope="warning", record_id=task["id"]
            )
        )
    return [image_record(task, facts, rois=rois, labels=labels, file_hash=facts.file_hash)], problems
