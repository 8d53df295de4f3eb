"""Image / mask pairs: the same name in two folders, or a name pattern. Masks hold {0,255} or label
ids; each connected region of each label becomes an ROI with a box and an RLE mask."""

from __future__ import annotations

import json
import os

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..imaging import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, DecodeError, file_facts, mask_regions, open_image
from ..records import quarantine_row
from .base import Scan, fingerprint, image_record, is_image_file, make_task, walk_files


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images_dir: str = "images"
    masks_dir: str = "masks"
    # mask file name from the image's stem, e.g. "{stem}_mask.png"; default: same stem, any image extension
    mask_pattern: str | None = None
    # mask value -> label name; default: 1 and 255 are `mask_label`, other values are "label_<value>"
    mask_labels: dict[int, str] | None = None
    mask_label: str = "foreground"
    background: int = 0
    min_region_pixels: int = 1


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    root = source["root"]
    images, masks = os.path.join(root, opts.images_dir), os.path.join(root, opts.masks_dir)
    by_stem: dict[str, str] = {}
    out = Scan()
    for p in walk_files(masks, out, source):
        if is_image_file(p):
            by_stem.setdefault(p.relative_to(masks).with_suffix("").as_posix(), str(p))
    for p in walk_files(images, out, source):
        if not is_image_file(p):
            out.filter("not an image file")
            continue
        rel_stem = p.relative_to(images).with_suffix("").as_posix()
        if opts.mask_pattern:
            name = opts.mask_pattern.format(stem=p.stem, name=p.name)
            mask = os.path.join(masks, os.path.dirname(rel_stem), name)
            mask = mask if os.path.isfile(mask) else None
        else:
            mask = by_stem.get(rel_stem)
        rel = p.relative_to(root).as_posix()
        if mask is None:
            out.quarantine.append(
                quarantine_row(
                    source["name"],
                    rel,
                    "missing_mask",
                    f"no mask for {p.name} in {opts.masks_dir}/"
                    + (f" (pattern {opts.mask_pattern})" if opts.mask_pattern else ""),
                )
            )
            continue
        out.tasks.append(make_task(source, str(p), extra={"mask": mask}, fingerprint_extra=fingerprint(mask)))
    return out


def mask_names(opts: Options, values: list[int]) -> dict[int, str]:
    if opts.mask_labels is not None:
        return dict(opts.mask_labels)
    return {v: opts.mask_label if v in (1, 255) else f"label_{v}" for v in values}


def decode(task: dict, source: dict) -> tuple[list[dict], list[dict]]:
    opts = Options(**source["options"])
    max_pixels = source.get("max_pixels") or DEFAULT_MAX_PIXELS
    facts = file_facts(
        task["path"],
        max_pixels,
        damaged=source.get("damaged_images") or "quarantine",
        max_bytes=source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES,
    )
    mask_path = json.loads(task["extra"])["mask"]
    try:
        mask_im = open_image(mask_path, max_pixels)
    except DecodeError as e:
        raise DecodeError(f"mask_{e.reason}", f"mask {os.path.relpath(mask_path, source['root'])}: {e}") from None
    if mask_im.size != (facts.width, facts.height):
        raise DecodeError(
            "mask_mismatch",
            f"mask {os.path.relpath(mask_path, source['root'])} is "
            f"{mask_im.size[0]}x{mask_im.size[1]}, image is {facts.width}x{facts.height}",
        )
    mask = np.asarray(mask_im.convert("L") if mask_im.mode in ("RGB", "RGBA", "P", "LA") else mask_im)
    values = [int(v) for v in np.unique(mask) if int(v) != opts.background]
    names = {v: source["label_map"].get(n, n) for v, n in mask_names(opts, values).items()}
    rois, unknown = mask_regions(mask, names, opts.background, opts.min_region_pixels)
    problems = []
    if unknown:
        problems.append(
            quarantine_row(
                source["name"],
                task["uri"],
                "label_outside_space",
                f"mask values {unknown} have no name in `mask_labels` {names}",
                stage="decode",
                scope="annotation",
                record_id=task["id"],
            )
        )
    labels = sorted({r["label"] for r in rois})
    if facts.warning:
        problems.append(
            quarantine_row(
                source["name"], task["uri"], "damaged_kept", facts.warning, stage="decode", scope="warning", record_id=task["id"]
            )
        )
    return [image_record(task, facts, rois=rois, labels=labels, file_hash=facts.file_hash)], problems
