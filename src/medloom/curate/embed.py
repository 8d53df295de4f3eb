"""Image embeddings, computed per catalog part and cached: `LOOM/embeddings/MODEL/<part>.parquet`.

Catalog parts are content-addressed, so an unchanged part keeps its embeddings and a re-run after adding
data embeds only the new parts. Readers stream the cache part by part (memory stays bounded).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import catalog, layout
from ..engine import capped, make_executor, stage_module
from ..engine.progress import progress_bar
from ..locks import writer
from ..outputs import OutputFolder, write_file

EMBEDDINGS = layout.EMBEDDINGS
DEFAULT_MODEL = "builtin"
IMAGE_SIDE = 256  # images are shrunk to this before embedding (every model resizes further)


@dataclass
class EmbedReport:
    model: str
    records: int = 0
    parts: int = 0
    parts_computed: int = 0
    dimensions: int = 0
    unreadable: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    out: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"embed {self.model}: {self.records} records, {self.dimensions} dimensions; {self.parts_computed} of "
            f"{self.parts} parts computed, the rest cached; {len(self.unreadable)} unreadable; {self.out}"
        )


def model_folder(loom: Path, model: str) -> Path:
    return Path(loom) / EMBEDDINGS / re.sub(r"[^A-Za-z0-9_.\-]+", "_", model)


def embed_part(table: pa.Table, settings: dict) -> tuple[pa.Table, list[dict]]:
    """Stage `curate.embed`: records -> (id, vector) for those whose pixels read, and the ones that did not."""
    from ..imaging import DecodeError
    from ..models.embedders import get_model
    from ..view.render import record_image

    model = get_model(settings["model"])
    cache: dict = {}
    ids, images, problems = [], [], []
    for row in table.to_pylist():
        try:
            images.append(record_image(row, settings, cache, IMAGE_SIDE).convert("RGB"))
            ids.append(row["id"])
        except (DecodeError, OSError, ValueError) as e:
            problems.append({"id": row["id"], "reason": getattr(e, "reason", type(e).__name__), "message": str(e)})
    vectors = np.asarray(model(images), np.float32) if images else np.zeros((0, 0), np.float32)
    dim = vectors.shape[1] if vectors.ndim == 2 and len(vectors) else 0
    column = (
        pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim)
        if dim
        else pa.array([], pa.list_(pa.float32(), 1))
    )
    return pa.table({"id": pa.array(ids, pa.string()), "vector": column}), problems


@writer
def embed(
    loom: Path, model: str = DEFAULT_MODEL, *, workers: int | None = None, quiet: bool = False, latest: bool = True
) -> EmbedReport:
    """`latest`: make this model the one `cluster` and `dedup` read by default (not when a trainer fills the
    cache for its own use)."""
    from ..models.embedders import get_model
    from ..view.render import render_sources

    loom = Path(loom)
    get_model(model)  # an unknown name or a missing package fails here, before any work
    manifest = catalog.read_manifest(loom)
    sources = render_sources(manifest)
    folder = model_folder(loom, model)
    report = EmbedReport(model=model, out=str(folder))
    started = time.perf_counter()
    parts = []  # (catalog part file, cache file)
    for name, entry in sorted(manifest["sources"].items()):
        rdir, _ = catalog.source_dirs(loom, name)
        for p in entry["parts"]:
            if p["records"]["rows"]:
                parts.append((rdir / p["records"]["file"], folder / name / p["records"]["file"]))
    out = OutputFolder(folder, adopt=[dst.relative_to(folder).as_posix() for _, dst in parts])
    todo = [(src, dst) for src, dst in parts if not (out.is_owned(out.rel(dst)) and catalog.part_is_complete(dst))]
    report.parts, report.parts_computed = len(parts), len(todo)
    settings = {"model": model, "sources": sources}
    total = sum(pq.read_metadata(src).num_rows for src, _ in todo)
    tables = (pq.read_table(src) for src, _ in todo)
    with (
        make_executor(workers if model == "builtin" else capped(workers, 2), preload=[stage_module("curate.embed")]) as executor,
        progress_bar(f"embed {model}", total, quiet) as advance,
    ):
        for j, (table, problems) in executor.map("curate.embed", tables, settings):
            out.write_table(out.rel(todo[j][1]), table)
            report.unreadable += problems
            advance(table.num_rows + len(problems))
    keep = {out.rel(dst) for _, dst in parts}
    out.remove_temporary()
    out.remove_many([r for r in out.owned if r.endswith(".parquet") and r not in keep])  # parts no longer listed
    for _, dst in parts:
        meta = pq.read_metadata(dst)
        report.records += meta.num_rows
        if meta.num_rows and not report.dimensions:
            report.dimensions = pq.read_schema(dst).field("vector").type.list_size
    report.seconds = time.perf_counter() - started
    out.write_bytes(
        "manifest.json",
        json.dumps(
            {"model": model, "parts": [str(dst.relative_to(folder)) for _, dst in parts], "report": report.as_dict()}, indent=1
        ).encode(),
    )
    if latest:
        write_file(Path(loom) / EMBEDDINGS / "latest.json", json.dumps({"model": model}).encode())
    return report


def embedding_parts(loom: Path, model: str | None = None) -> tuple[str, list[Path]]:
    """The model (the last one embedded, by default) and its cache files in catalog order."""
    loom = Path(loom)
    if model is None:
        latest = loom / EMBEDDINGS / "latest.json"
        if not latest.is_file():
            raise FileNotFoundError(f"{loom}: no embeddings; run `medloom embed {loom}` first")
        model = json.loads(latest.read_text())["model"]
    folder = model_folder(loom, model)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{loom}: no embeddings for model {model!r}; run `medloom embed {loom} --model {model}`")
    return model, [folder / p for p in json.loads(manifest.read_text())["parts"]]


def iter_embeddings(loom: Path, model: str | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, vectors) one cached part at a time."""
    _, files = embedding_parts(loom, model)
    for path in files:
        table = pq.read_table(path)
        if table.num_rows:
            dim = table.schema.field("vector").type.list_size
            vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
            yield table.column("id").to_pylist(), vectors.astype(np.float32)


def read_embeddings(loom: Path, model: str | None = None) -> tuple[list[str], np.ndarray | None]:
    """Every cached embedding at once (for small corpora and all-pairs neighbour search)."""
    try:
        chunks = list(iter_embeddings(loom, model))
    except FileNotFoundError:
        return [], None
    if not chunks:
        return [], None
    return [i for ids, _ in chunks for i in ids], np.concatenate([v for _, v in chunks])
