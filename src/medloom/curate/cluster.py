"""PCA then k-means over the cached embeddings, streamed part by part so memory stays bounded, with the
explained-variance curve (JSON and a PNG plot) and a contact sheet of sample images per cluster.

PCA: one pass accumulates the mean and the covariance (d x d), then an eigen-decomposition. k-means:
k-means++ seeding on a reservoir sample, then mini-batch updates (Sculley 2010) over a few passes of the
parts, then one assignment pass. Everything random comes from the seed, and parts are read in catalog
order, so the same seed gives the same clusters.
"""

from __future__ import annotations

import heapq
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from .. import catalog
from ..engine.progress import progress_bar
from ..locks import writer
from ..outputs import OutputFolder, write_file, write_parquet
from .dedup import CURATION
from .embed import iter_embeddings

SAMPLE = 20_000  # reservoir for k-means++ seeding
SHEET = 16  # images per contact sheet


@dataclass
class ClusterReport:
    model: str
    records: int = 0
    k: int = 0
    pca: int = 0
    explained_variance: float = 0.0
    sizes: list[int] = field(default_factory=list)
    inertia: float = 0.0
    seed: int = 0
    out: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"cluster: {self.records} records into {self.k} clusters (sizes {min(self.sizes)}..{max(self.sizes)}) "
            f"after PCA to {self.pca} dimensions ({self.explained_variance:.0%} of the variance); {self.out}"
        )


def streamed_pca(loom: Path, model: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(mean, components as rows in order of variance, explained-variance ratios, n) in one pass."""
    n, total, outer = 0, None, None
    for _, v in iter_embeddings(loom, model):
        v = v.astype(np.float64)
        if total is None:
            total, outer = np.zeros(v.shape[1]), np.zeros((v.shape[1], v.shape[1]))
        n += len(v)
        total += v.sum(0)
        outer += v.T @ v
    if not n:
        raise ValueError(f"{loom}: the embeddings are empty")
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values = np.clip(values[order], 0, None)
    return mean, vectors[:, order].T, values / max(values.sum(), 1e-12), n


def _projected(loom: Path, model: str | None, mean: np.ndarray, components: np.ndarray):
    for ids, v in iter_embeddings(loom, model):
        yield ids, ((v.astype(np.float64) - mean) @ components.T).astype(np.float32)


def kmeans_plus_plus(sample: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [sample[rng.integers(len(sample))]]
    d2 = ((sample - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(sample), 1 / len(sample))
        centers.append(sample[rng.choice(len(sample), p=p)])
        d2 = np.minimum(d2, ((sample - centers[-1]) ** 2).sum(1))
    return np.array(centers, np.float64)


def _nearest(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = (x * x).sum(1)[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]
    labels = d.argmin(1)
    return labels, np.sqrt(np.maximum(d[np.arange(len(x)), labels], 0))


@writer
def cluster(
    loom: Path,
    k: int,
    *,
    pca: int = 50,
    seed: int = 0,
    passes: int = 5,
    batch: int = 1024,
    model: str | None = None,
    sheets: bool = True,
    quiet: bool = False,
) -> ClusterReport:
    from .embed import embedding_parts

    loom = Path(loom)
    started = time.perf_counter()
    model, _ = embedding_parts(loom, model)
    mean, components, ratios, n = streamed_pca(loom, model)
    if k < 1 or k > n:
        raise ValueError(f"--k {k}: choose between 1 and the {n} embedded records")
    dims = max(1, min(pca, components.shape[0]))
    components = components[:dims]
    rng = np.random.default_rng(seed)
    # reservoir sample for seeding (bounded memory whatever n is)
    sample, seen = [], 0
    for _, x in _projected(loom, model, mean, components):
        for row in x:
            seen += 1
            if len(sample) < SAMPLE:
                sample.append(row)
            else:
                j = rng.integers(seen)
                if j < SAMPLE:
                    sample[j] = row
    centers = kmeans_plus_plus(np.array(sample, np.float64), k, rng)
    counts = np.zeros(k)
    with progress_bar(f"k-means ({passes} passes)", passes * n, quiet) as advance:
        for _ in range(passes):
            for _, x in _projected(loom, model, mean, components):
                advance(len(x))
                for start in range(0, len(x), batch):
                    xb = x[start : start + batch].astype(np.float64)
                    labels, _ = _nearest(xb, centers)
                    for c in np.unique(labels):
                        members = xb[labels == c]
                        counts[c] += len(members)
                        centers[c] += (members.sum(0) - len(members) * centers[c]) / counts[c]
    ids, labels, dists, best = [], [], [], [[] for _ in range(k)]
    inertia = 0.0
    for part_ids, x in _projected(loom, model, mean, components):
        lab, dist = _nearest(x.astype(np.float64), centers)
        inertia += float((dist**2).sum())
        for rid, c, d in zip(part_ids, lab, dist):
            heapq.heappush(best[c], (-float(d), rid))
            if len(best[c]) > SHEET:
                heapq.heappop(best[c])
        ids += part_ids
        labels += lab.tolist()
        dists += dist.tolist()
    folder = loom / CURATION
    write_parquet(
        folder / "clusters.parquet",
        pa.table({"id": ids, "cluster": pa.array(labels, pa.int32()), "distance": pa.array(dists, pa.float32())}),
    )
    sizes = np.bincount(np.array(labels), minlength=k).tolist()
    report = ClusterReport(
        model=model,
        records=n,
        k=k,
        pca=dims,
        explained_variance=float(ratios[:dims].sum()),
        sizes=sizes,
        inertia=inertia,
        seed=seed,
        out=str(folder),
    )
    np.savez(folder / "pca.npz", mean=mean, components=components, centers=centers)
    curve = np.cumsum(ratios).tolist()
    write_file(
        folder / "explained_variance.json",
        json.dumps({"ratio": ratios.tolist(), "cumulative": curve, "kept": dims}, indent=1).encode(),
    )
    write_file(folder / "explained_variance.png", png_bytes(variance_plot(curve, dims)))
    if sheets:
        contact_sheets(loom, folder / "contact_sheets", [sorted(b, reverse=True) for b in best])
    report.seconds = time.perf_counter() - started
    write_file(folder / "clusters.json", json.dumps(report.as_dict(), indent=1).encode())
    return report


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def variance_plot(cumulative: list[float], kept: int, size: tuple[int, int] = (640, 400)) -> Image.Image:
    """Cumulative explained variance against the number of components, the kept number marked."""
    w, h = size
    left, bottom, top, right = 60, 40, 20, 20
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    n = len(cumulative)
    x = lambda i: left + (w - left - right) * (i / max(n - 1, 1))  # noqa: E731
    y = lambda v: h - bottom - (h - top - bottom) * v  # noqa: E731
    draw.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.line([(left - 4, y(v)), (left, y(v))], fill="black")
        draw.text((8, y(v) - 6), f"{v:.2f}", fill="black")
    draw.line([(x(i), y(c)) for i, c in enumerate(cumulative)], fill=(31, 119, 180), width=2)
    if n:
        kx = x(min(kept, n) - 1)
        draw.line([(kx, top), (kx, h - bottom)], fill=(214, 39, 40))
        draw.text((kx + 4, top), f"{kept} components: {cumulative[min(kept, n) - 1]:.2f}", fill=(214, 39, 40))
    draw.text((left, h - bottom + 12), f"components (1..{n})", fill="black")
    draw.text((left + 4, top), "cumulative explained variance", fill="black")
    return im


def contact_sheets(loom: Path, folder: Path, members: list[list[tuple[float, str]]], tile: int = 128) -> None:
    """One PNG per cluster: up to 16 records nearest its centre, 4 per row, with the cluster number."""
    from ..view.render import record_image, render_sources

    con = catalog.connect(loom)
    sources = render_sources(catalog.read_manifest(loom))
    sheets = OutputFolder(folder, adopt=[p.name for p in folder.glob("cluster-*.png")])
    sheets.remove_many([r for r in sheets.owned if r.startswith("cluster-")])  # medloom's own sheets only
    cache: dict = {}
    for c, items in enumerate(members):
        ids = [rid for _, rid in items]
        rows = {}
        if ids:
            cur = con.execute(f"SELECT * FROM records WHERE id IN ({', '.join('?' * len(ids))})", ids)
            cols = [d[0] for d in cur.description]
            rows = {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}
        sheet = Image.new("RGB", (4 * tile, 24 + tile * max(1, (len(ids) + 3) // 4)), "white")
        draw = ImageDraw.Draw(sheet)
        draw.text((6, 6), f"cluster {c}: {len(ids)} nearest of its records", fill="black")
        for i, rid in enumerate(ids):
            try:
                im = record_image(rows[rid], {"sources": sources}, cache, tile).convert("RGB")
            except Exception:  # a file gone since ingest: leave its tile grey
                im = Image.new("RGB", (tile, tile), (200, 200, 200))
            im.thumbnail((tile - 4, tile - 4))
            sheet.paste(im, ((i % 4) * tile + 2, 24 + (i // 4) * tile + 2))
        sheets.write_bytes(f"cluster-{c:03d}.png", png_bytes(sheet))
