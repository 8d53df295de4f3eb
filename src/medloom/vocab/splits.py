"""Split-folder names as datasets spell them, mapped to train / val / test."""

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "eval": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
}


def split_name(folder: str) -> str | None:
    return SPLIT_NAMES.get(folder.strip().lower())


DEFAULT_SPLIT = "train"  # the split of a record whose source defines none


def record_split(source_split: str | None) -> str:
    """The split a record is on when `medloom split` assigned none: its source's (as medloom spells it), else
    `DEFAULT_SPLIT`."""
    text = (source_split or "").strip()
    return split_name(text) or text.lower() or DEFAULT_SPLIT
