"""Split-folder names as datasets spell them, mapped to train / val / test."""

SPLIT_NAMES = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val", "eval": "val",
    "test": "test", "testing": "test", "tst": "test",
}


def split_name(folder: str) -> str | None:
    return SPLIT_NAMES.get(folder.strip().lower())
