"""A nearest-neighbour probe: what frozen image features alone answer, with no training at all.

`cg run`'s control (`--nn-probe`, on by default): per experiment, the training records' features from the locked
image tower (the same cached EfficientNet-Lite0 outputs `train clip` starts from) with their class names. Asked
a target's question, the probe answers with the option carried by the nearest training image (cosine; among
the images carrying one of the options). Where the probe scores what a trained model scores, the model has
learnt nothing the features did not already hold; a trained model above its probe has learnt to recombine.
Records with one label count (a detection record's label too); multi-label and unlabelled ones are left out.
The folder is a `medloom:` model (`models/clip.py`, kind `nn-probe`), so `eval vqa` asks it like any other,
and it lists its records as keyed hashes (`train.json`) so an evaluation refuses them.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ..errors import TrainError
from ..locks import writer
from ..outputs import OutputFolder
from .projections import IMAGE_TOWER, TrainSettings, record_keys, tower_features, training_records


@writer
def write_nn_probe(loom: Path, out: Path, experiment: Path, *, workers: int | None = None, quiet: bool = False) -> int:
    """Write the probe of an experiment's training side to `out`; returns how many records it holds."""
    from ..models.clip import CONFIG, NEIGHBOURS
    from ..vocab.words import class_name

    loom = Path(loom)
    folder = OutputFolder(out)
    folder.require_only_own("nn probe")
    table, what = training_records(loom, TrainSettings(experiment=str(experiment)))
    rows = [r for r in table.to_pylist() if len(r.get("labels") or []) == 1]
    if not rows:
        raise TrainError(f"{loom}: no single-label record in {what}: the probe has nothing to answer with")
    features = tower_features(loom, {r["id"] for r in rows}, workers, quiet)
    rows = [r for r in rows if r["id"] in features]
    if not rows:
        raise TrainError(f"{loom}: no readable image in {what}: the probe has nothing to answer with")
    matrix = np.stack([features[r["id"]] for r in rows]).astype(np.float32)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    buf = io.BytesIO()
    np.savez(buf, features=matrix, labels=np.array([class_name(r["labels"][0]) for r in rows]))
    folder.write_bytes(NEIGHBOURS, buf.getvalue())
    ids = "\n".join(sorted(r["id"] for r in rows)).encode()
    folder.write_bytes(
        "train.json",
        json.dumps(
            {
                "kind": "nn-probe",
                "records": len(rows),
                "records_sha256": hashlib.sha256(ids).hexdigest(),
                "record_keys": record_keys(loom, rows),
                "image_tower": IMAGE_TOWER,
            },
            indent=1,
        ).encode(),
    )
    config = {"format": "medloom-clip", "version": 1, "kind": "nn-probe", "image_tower": IMAGE_TOWER}
    folder.write_bytes(CONFIG, json.dumps(config, indent=1).encode())  # last: a folder without it is not a model
    return len(rows)
