"""Stream samples from an export folder, shard files or URLs; optionally as a torch IterableDataset.

    from medloom import load
    for sample in load("exports/webdataset", split="train", shuffle=1000, seed=0):
        sample["__key__"], sample["jpg"], sample["json"]

Shards are divided among consumers: every DataLoader worker of every distributed rank reads its own
shards (shard i goes to consumer i mod (ranks x workers)), so each sample is read once per epoch.
Shard order (and the shuffle buffer) follow `seed` and the epoch set with `set_epoch`. Reads WebDataset
tars (plain or compressed, with gzip-compressed members) and medloom's Parquet shards.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import sys
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..view.proposals import ROI_CHOICES, chosen_rois

IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "gif", "ppm", "pgm"})
TEXT_EXTS = frozenset({"txt", "text", "caption"})
INT_EXTS = frozenset({"cls", "cls2", "index", "inx", "id"})
DECODERS = ("pil", "numpy", "torch")
BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """`shard-{000000..000009}.tar` -> ten names (zero padding kept), as webdataset spells shard lists."""
    match = BRACES.search(pattern)
    if not match:
        return [pattern]
    lo, hi = match.groups()
    width = len(lo) if lo.startswith("0") else 0
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [name for i in range(int(lo), int(hi) + 1) for name in expand_braces(f"{head}{i:0{width}d}{tail}")]


def shard_list(source: str | os.PathLike | Iterable[str], split: str | list[str] | None = None) -> list[str]:
    """Shard paths or URLs from an export folder (its manifest), a folder of tars, a pattern or a list."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _folder_shards(path, split)
        return expand_braces(str(source))
    return [s for item in source for s in shard_list(item, split)]


def _folder_shards(folder: Path, split: str | list[str] | None) -> list[str]:
    from ..export import read_export_manifest

    wanted = [split] if isinstance(split, str) else split
    manifest = read_export_manifest(folder)
    if manifest is not None:
        splits = manifest["splits"]
        missing = [s for s in wanted or [] if s not in splits]
        if missing:
            raise ValueError(f"{folder}: no split {', '.join(missing)}; the export has {', '.join(sorted(splits))}")
        return [str(folder / shard["file"]) for name in sorted(wanted or splits) for shard in splits[name]["shards"]]
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".tar", ".tgz", ".tar.gz", ".parquet")))
    if wanted:
        files = [p for p in files if any(p.name.startswith(f"{s}-") for s in wanted)]
    if not files:
        raise ValueError(f"{folder}: no shards here (.tar, .tgz or .parquet)")
    return [str(p) for p in files]


def _open(url: str):
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url, timeout=60)
    return open(url.removeprefix("file://"), "rb", buffering=1 << 20)


def read_shard(url: str) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard: {"__key__", "__url__", ext: bytes, ...}."""
    if url.endswith(".parquet"):
        yield from _read_parquet(url)
        return
    from ..export.webdataset import iter_samples

    problems: list[str] = []
    with _open(url) as f:
        for key, files in iter_samples(f, url, problems):
            sample: dict[str, Any] = {"__key__": key, "__url__": url}
            for ext, data in files.items():
                if ext.endswith(".gz"):
                    ext, data = ext[:-3], gzip.decompress(data)
                sample[ext] = data
            yield sample


def _read_parquet(url: str) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    with _open(url) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                image = row.pop("image")
                ext = (image.get("path") or ".jpg").rsplit(".", 1)[-1]
                yield {"__key__": row["key"], "__url__": url, ext: image["bytes"], "json": row}


def decode_sample(
    sample: dict[str, Any], images: str, channels: int | None = None, size: int | tuple[int, int] | None = None
) -> dict[str, Any]:
    """Images to PIL/numpy/torch; JSON, text and class ids parsed; other fields left as bytes."""
    out = {}
    for ext, data in sample.items():
        if ext.startswith("__") or not isinstance(data, bytes):
            out[ext] = data
            continue
        last = ext.rsplit(".", 1)[-1]
        if last in IMAGE_EXTS:
            out[ext] = _decode_image(data, images, channels, size)
        elif last == "json":
            out[ext] = json.loads(data)
        elif last in TEXT_EXTS:
            out[ext] = data.decode("utf-8")
        elif last in INT_EXTS:
            out[ext] = int(data.decode().strip())
        elif last == "npy":
            import numpy as np

            out[ext] = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            out[ext] = data
    return out


def _decode_image(data: bytes, how: str, channels: int | None = None, size: int | tuple[int, int] | None = None):
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    if channels is not None and len(im.getbands()) != channels:
        im = im.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
    if size is not None:
        im = fixed_size(im, size)
    if how == "pil":
        return im
    import numpy as np

    arr = np.asarray(im)
    if how == "numpy":
        return arr
    import torch

    t = torch.from_numpy(arr.copy())
    return t.permute(2, 0, 1) if t.ndim == 3 else t[None]


def fixed_size(im, size: int | tuple[int, int]):
    """`size=N`: the shorter side to N, then the centre N x N (the usual CLIP preprocessing); `size=(w, h)`:
    exactly w x h. Either way every image of a batch has one shape."""
    from PIL import Image

    if isinstance(size, int):
        scale = size / min(im.size)
        w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
        im = im.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size))
    return im.resize(tuple(size), Image.Resampling.BICUBIC)


def consumer() -> tuple[int, int]:
    """(index, count) of this reader among all DataLoader workers of all distributed ranks."""
    rank, world, worker, workers = 0, 1, 0, 1
    if "torch" in sys.modules:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = torch.utils.data.get_worker_info()
        if info is not None:
            worker, workers = info.id, info.num_workers
    if world == 1 and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"])
    return rank * workers + worker, world * workers


class Stream:
    """An iterable over samples; iterate it directly or wrap it with `.torch()` for a DataLoader."""

    def __init__(
        self,
        shards: list[str],
        *,
        decode: bool | str = True,
        shuffle: int = 0,
        seed: int = 0,
        transform: Callable[[dict], Any] | None = None,
        channels: int | None = None,
        size: int | tuple[int, int] | None = None,
        rois: str = "all",
    ):
        if rois not in ROI_CHOICES:
            raise ValueError(f"rois={rois!r}: use one of {', '.join(ROI_CHOICES)}")
        if rois != "all" and not decode:
            raise ValueError(f"rois={rois!r} reads the samples' JSON: it needs decode")
        if decode is True:
            decode = "pil"
        if decode and decode not in DECODERS:
            raise ValueError(f"decode={decode!r}: use True, False or one of {', '.join(DECODERS)}")
        if channels not in (None, 1, 3, 4):
            raise ValueError(f"channels={channels!r}: use 1, 3 or 4")
        # tensors a batch can stack: one channel count (3 unless asked otherwise)
        self.channels = channels if channels is not None or decode != "torch" else 3
        self.size = size
        self.shards = list(shards)
        self.decode = decode or None
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform
        self.rois = rois
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """A new shard order and shuffle for each epoch (call it before each epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def my_shards(self) -> list[str]:
        index, count = consumer()
        shards = list(self.shards)
        if self.shuffle:
            random.Random(f"{self.seed}/{self.epoch}").shuffle(shards)
        return shards[index::count]

    def _samples(self) -> Iterator[dict[str, Any]]:
        for url in self.my_shards():
            for sample in read_shard(url):
                if self.decode:
                    sample = decode_sample(sample, self.decode, self.channels, self.size)
                    meta = sample.get("json")
                    if isinstance(meta, dict) and "rois" in meta:  # each ROI with its roi_source; one source if asked
                        meta["rois"] = chosen_rois(meta["rois"], self.rois)
                yield self.transform(sample) if self.transform else sample

    def __iter__(self) -> Iterator[Any]:
        samples = self._samples()
        if not self.shuffle:
            yield from samples
            return
        index, _ = consumer()
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        buffer: list = []
        for sample in samples:
            if len(buffer) < self.shuffle:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def torch(self):
        """This stream as a `torch.utils.data.IterableDataset` (imports torch)."""
        from .torch import TorchStream

        return TorchStream(self)


def load(
    source: str | os.PathLike | Iterable[str],
    *,
    split: str | list[str] | None = None,
    decode: bool | str = True,
    shuffle: int = 0,
    seed: int = 0,
    transform: Callable[[dict], Any] | None = None,
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
    rois: str = "all",
) -> Stream:
    """A stream over an export folder (all splits, or `split`), shard paths, URLs or `{a..b}` patterns.

    decode: True or "pil" (PIL images), "numpy", "torch" (CHW uint8 tensors) or False (raw bytes);
    JSON, text and class-id fields are parsed unless decode is False. shuffle: buffer size (0 = off).
    channels: 1, 3 or 4 (default 3 for "torch", as found otherwise); size: N (shorter side to N, centre
    crop N x N) or (w, h), so that images batch with the default collate. rois: "all" (the dataset's ROIs and
    the machine proposals the export took, each with its `roi_source` and `accepted`), "dataset" or "proposal"
    (only those)."""
    return Stream(
        shard_list(source, split),
        decode=decode,
        shuffle=shuffle,
        seed=seed,
        transform=transform,
        channels=channels,
        size=size,
        rois=rois,
    )
