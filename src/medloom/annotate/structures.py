"""Which ROIs are instances and which are parts of one structure: the counts a text may state.

A label mask falls into several connected regions whenever a structure leaves the slice and comes back (the
brain on an axial slice through the eyes and the cerebellum, a lung split by the heart's shadow). An organ on
one image is one organ however many regions it shows; lesions and cells are counted one by one. The rule:

- ROIs that are boxes only (no mask) are instances: an annotator drew each box around one object.
- Mask regions of a label named in `instances` are instances; regions of any other label are the parts of
  one structure (one ROI fact, `parts` > 1, its box the union of theirs).
- A method's proposals (`roi_source: proposal`) are never parts of a structure people drew.
- `instances` is a recipe choice (`annotate: {instances: [nodule, polyp]}`), matched against the label's
  words and their plurals; by default the lesion and cell words of `DEFAULT_INSTANCES`.
"""

from __future__ import annotations

from ..vocab.words import label_words, plural

DEFAULT_INSTANCES = (
    "nodule",
    "polyp",
    "cell",
    "nucleus",
    "nuclei",
    "lesion",
    "tumour",
    "tumor",
    "mass",
    "cyst",
    "metastasis",
    "metastases",
    "aneurysm",
    "microaneurysm",
    "haemorrhage",
    "hemorrhage",
    "exudate",
    "calcification",
    "fracture",
    "mitosis",
    "mitoses",
    "adenoma",
    "instance",
)


def instance_words(instances: list[str] | tuple[str, ...] | None) -> frozenset[str]:
    words = DEFAULT_INSTANCES if instances is None else instances
    return frozenset(w for x in words for w in (label_words(x).lower(), plural(label_words(x).lower())))


def counts_as_instances(label: str, words: frozenset[str]) -> bool:
    name = label_words(label).lower()
    return name in words or any(w in words for w in name.split())


def group_rois(rois: list[dict], words: frozenset[str]) -> list[list[int]]:
    """The ROIs as objects: lists of indices into `rois`, one per instance, one per structure (all of its
    mask regions), in the order of each object's first ROI."""
    groups: list[list[int]] = []
    structure: dict[tuple[str, bool], int] = {}
    for i, roi in enumerate(rois):
        label = roi["label"]
        key = (label, roi.get("roi_source") == "proposal")  # a proposal never merges with people's ROIs
        if not list(roi.get("rle") or []) or counts_as_instances(label, words):
            groups.append([i])
        elif key in structure:
            groups[structure[key]].append(i)
        else:
            structure[key] = len(groups)
            groups.append([i])
    return groups


def union_box(boxes: list) -> list[float]:
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def objects(rois: list[dict], words: frozenset[str]) -> list[dict]:
    """One dict per object: `label`, `bbox` (the union of its parts'), `area` (their sum), `parts`, `members`,
    `proposal` (a method proposed it: `roi_source: proposal`)."""
    out = []
    for members in group_rois(rois, words):
        parts = [rois[i] for i in members]
        out.append(
            {
                "label": parts[0]["label"],
                "bbox": union_box([list(p["bbox"]) for p in parts]),
                "area": sum(float(p.get("area") or 0.0) for p in parts),
                "parts": len(parts),
                "members": members,
                "proposal": parts[0].get("roi_source") == "proposal",
            }
        )
    return out


def object_counts(rois: list[dict], words: frozenset[str]) -> dict[str, int]:
    """How many objects of each label the ROIs show: what "two nodules" or "one brain" must agree with."""
    counts: dict[str, int] = {}
    for obj in objects(rois, words):
        counts[obj["label"]] = counts.get(obj["label"], 0) + 1
    return counts
