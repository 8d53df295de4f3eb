"""How generated text reads: MedTrinity-25M's multigranular structure in a radiologist's words.

MedTrinity's descriptions run from the global view (modality, organ, finding) to each region of interest
(where it lies, its size, shape and texture against its surroundings), then how the regions relate, then
medical knowledge retrieved for the finding. medloom writes the same four parts, from catalog facts only:

- the study once ("Axial slice of a brain MRI", "Chest radiograph"), never the modality twice;
- a structure (an organ mask) named without a count ("a whole-brain mask": the organ is never "one brain"),
  lesions and cells counted ("two nodules"), a lone lesion "a nodule";
- ROIs a method proposed (`roi_source: proposal`) as "candidate" regions, never as annotated ones;
- knowledge as "Pneumonia (HPO): inflammation of ...", only where the ontology has the finding.
"""

from __future__ import annotations

from ..vocab.words import NORMAL, anatomy_phrase, join_words, label_words, modality_phrase, plural, sentence, with_article
from .structures import counts_as_instances

# what a radiologist calls a study of each modality
STUDY_NOUNS = {
    "X-ray": "radiograph",
    "MRI": "MRI",
    "CT": "CT",
    "ultrasound": "ultrasound",
    "PET": "PET",
    "fundus photography": "fundus photograph",
    "mammography": "mammogram",
    "dermoscopy": "dermoscopic image",
    "endoscopy": "endoscopic image",
    "pathology": "histopathology image",
    "microscopy": "microscopy image",
    "OCT": "OCT scan",
}
# anatomies that read before the study ("chest radiograph", "brain MRI") rather than after it
PREFIX_ANATOMY = frozenset({"chest", "brain", "abdomen", "spine", "pelvis", "knee", "hand", "liver", "kidney", "breast"})
# a study whose noun already says the organ: "fundus photograph", not "fundus photograph of the eye"
IMPLIED = {
    ("fundus photography", "eye"),
    ("mammography", "breast"),
    ("dermoscopy", "skin"),
    ("pathology", "cell"),
    ("microscopy", "cell"),
}
# words that say a region was drawn by people, which a machine proposal must never be called
ANNOTATED_WORDS = ("annotated", "annotation", "manually", "manual", "expert", "ground truth", "ground-truth", "reference")
# brightness in each modality's own words
BRIGHTNESS = {
    "MRI": {"brighter than": "hyperintense to", "darker than": "hypointense to", "similar in brightness to": "isointense to"},
    "CT": {"brighter than": "hyperdense to", "darker than": "hypodense to", "similar in brightness to": "isodense to"},
    "ultrasound": {"brighter than": "hyperechoic to", "darker than": "hypoechoic to", "similar in brightness to": "isoechoic to"},
}


TEXTURE = {
    "more heterogeneous than": "with a more heterogeneous texture",
    "more homogeneous than": "with a more homogeneous texture",
    "of similar texture to": "with a similar texture",
}


def is_proposal(roi: dict) -> bool:
    return roi.get("roi_source") == "proposal"


def study(record: dict, meta: dict | None = None) -> str:
    """The study as a noun phrase without article: "brain MRI", "radiograph of the lower limb", with the
    slice plane when the catalog knows it ("axial slice of a brain MRI")."""
    modality, anatomy = record.get("modality") or "unknown", record.get("anatomy") or "unknown"
    noun = STUDY_NOUNS.get(modality)
    if noun is None:
        phrase = f"{modality_phrase(modality)} {anatomy_phrase(anatomy)}".strip()
    elif (modality, anatomy) in IMPLIED or anatomy == "unknown":
        phrase = noun
    elif anatomy in PREFIX_ANATOMY:
        phrase = f"{anatomy} {noun}"
    else:
        phrase = f"{noun} {anatomy_phrase(anatomy)}".strip()
    axis = (meta or {}).get("axis")
    if axis in ("axial", "coronal", "sagittal"):
        phrase = f"{axis} slice of {with_article(phrase)}"
    return phrase


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def finding_phrase(labels: list[str]) -> str:
    """The findings as a clause after the study: "showing pneumonia", "with normal findings"."""
    if len(labels) == 1 and label_words(labels[0]).lower() in NORMAL:
        return "with normal findings"
    return "showing " + join_words([label_words(x) for x in labels])


def object_phrase(label: str, rois: list[dict], n: int, instance: bool, anatomy: str) -> str:
    """One kind of object as the global sentence names it: "a whole-brain mask", "two nodules outlined",
    "a candidate liver region (machine proposal)". `n`: how many objects of the kind (structures.py)."""
    name = label_words(label)
    masks = any(list(r.get("rle") or []) for r in rois)
    if rois and all(is_proposal(r) for r in rois):
        if n == 1:
            return f"a candidate {name} region (machine proposal)"
        return f"{count_word(n)} candidate {name} regions (machine proposals)"
    if not instance:  # a structure: one organ however many parts, never counted
        if name.lower() == anatomy.lower():
            return f"a whole-{name} mask" if masks else f"a box around the whole {name}"
        return f"the {name} outlined" if masks else f"the {name} marked by a box"
    drawn = "outlined" if masks else ("marked by boxes" if n > 1 else "marked by a box")
    if plural(name, 2) == name:  # an uncountable finding: "pneumonia marked by a box", "pneumonia in two boxes"
        return f"{name} {drawn}" if n == 1 else f"{name} in {count_word(n)} {'regions' if masks else 'boxes'}"
    return f"{with_article(name)} {drawn}" if n == 1 else f"{count_word(n)} {plural(name, n)} {drawn}"


def count_word(n: int) -> str:
    return {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}.get(n, str(n))


def objects_phrase(record: dict, counts: dict[str, int], words: frozenset[str]) -> str:
    rois = list(record.get("rois") or [])
    parts = []
    for label, n in counts.items():
        mine = [r for r in rois if r["label"] == label]
        instance = counts_as_instances(label, words) or not any(list(r.get("rle") or []) for r in mine)  # boxes: instances
        parts.append(object_phrase(label, mine, n, instance, record.get("anatomy") or ""))
    return join_words(parts)


def global_sentence(record: dict, meta: dict | None, counts: dict[str, int], words: frozenset[str]) -> str:
    """The first sentence: the study, then its findings or its regions."""
    head = capital(study(record, meta))
    if counts:
        return sentence(f"{head} with {objects_phrase(record, counts, words)}")
    labels = list(record.get("labels") or [])
    return sentence(f"{head} {finding_phrase(labels)}" if labels else head)


def object_name(roi: dict) -> str:
    name = label_words(roi["label"])
    if is_proposal(roi):
        return f"candidate {name} region {roi['index']}" if roi["count"] > 1 else f"the candidate {name} region"
    return f"{name} {roi['index']}" if roi["count"] > 1 else f"the {name}"


def local_sentence(roi: dict, modality: str) -> str:
    """One region: where, how large, its shape, its share of the image (and of the organ), brightness and
    texture against a ring around it."""
    parts = f", in {roi['parts']} separate parts" if roi.get("parts", 1) > 1 else ""
    share = f"{roi['area_share'] * 100:.1f}% of the image"
    if roi["organ_share"] >= 0:
        share += f" and {roi['organ_share'] * 100:.0f}% of the organ"
    text = f"{capital(object_name(roi))} is {roi['size']} and {roi['shape']}, in the {roi['location']} ({share}{parts})"
    if roi["brightness"]:
        brightness = BRIGHTNESS.get(modality, {}).get(roi["brightness"], roi["brightness"])
        texture = TEXTURE.get(roi["texture"], "")
        text += f", {brightness} its surroundings" + (f" {texture}" if texture else "")
    return sentence(text)


def relation_sentence(a: dict, b: dict, relation: str) -> str:
    verb = {"overlaps": "overlaps", "is adjacent to": "lies next to"}.get(relation, relation.replace("is ", "lies ", 1))
    return sentence(f"{capital(object_name(a))} {verb} {object_name(b)}")


def knowledge_sentence(entry: dict) -> str:
    """ "Effusion (HPO: Pleural effusion): the presence of ..." from one retrieved term."""
    name = label_words(entry["label"])
    source = entry.get("source") or "HPO"
    tag = source if name.lower() == entry["term"].lower() else f"{source}: {entry['term']}"
    definition = entry["definition"]
    first = definition.split(" ", 1)[0]
    if first[1:] == first[1:].lower():  # "Inflammation" -> "inflammation", but not "COVID" or "DNA"
        definition = definition[:1].lower() + definition[1:]
    return sentence(f"{capital(name)} ({tag}): {definition}")


def description(
    record: dict,
    meta: dict | None,
    rois: list[dict],
    relations: list[dict],
    counts: dict[str, int],
    words: frozenset[str],
    knowledge: list[dict],
) -> str:
    """The multigranular text: global, local (one sentence per object), relations, knowledge."""
    if not rois:
        return ""
    modality = record.get("modality") or ""
    parts = [global_sentence(record, meta, counts, words)]
    parts += [local_sentence(r, modality) for r in rois]
    parts += [relation_sentence(rois[r["a"]], rois[r["b"]], r["relation"]) for r in relations]
    parts += [knowledge_sentence(k) for k in knowledge]
    return " ".join(parts)
