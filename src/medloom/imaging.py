"""Decode, window, hash, resize, encode: everything that touches pixels.

Each image is decoded once; the decoded pixels give width, height, a 128-bit content hash (xxh3-128
of the packed pixel bytes after a mode-and-size header, so equal pixels in a JPEG, a PNG and a
lossless TIFF hash the same) and a 64-bit DCT perceptual hash built as `imagehash.phash` is, on a
32x32 grid of mean luma instead of a Lanczos thumbnail (`luma32`; within a bit of imagehash's on average).
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pyarrow as pa
import simplejpeg
import xxhash
from PIL import Image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm", ".jp2", ".j2k"})
# Budgets, checked before memory is taken (each can be raised per source in the recipe):
DEFAULT_MAX_PIXELS = 100_000_000  # decoded pixels per 2-D image (a 10000 x 10000 photograph)
DEFAULT_MAX_VOXELS = 1 << 28  # values per volume: a NIfTI volume, every frame of a DICOM file (512x512x1024)
DEFAULT_MAX_FILE_BYTES = 1 << 30  # bytes per input file, or per member read out of an archive
# box-reduce only down to this multiple of the target size before the final resampling filter
REDUCING_GAP = 2.0


class DecodeError(Exception):
    """A failure with a stable reason code (used as the quarantine reason)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PixelFacts:
    width: int
    height: int
    channels: int
    pixel_hash: str
    phash: int
    # of the file (not the pixels): xxh3-128 of its bytes, so an export can tell a file changed since ingest
    file_hash: str = field(default="", compare=False)
    frames: int = field(default=1, compare=False)  # frames in the file (GIF, TIFF); the facts are frame 0's
    warning: str = field(default="", compare=False)  # a damage that was kept by the recipe's choice


class DamagedJPEG(Exception):
    """libjpeg reported lost or corrupt image data (and would fill the rest grey)."""


# libjpeg warnings that mean pixels were lost or made up; others ("extraneous bytes before marker", an
# unknown JFIF revision) leave the image whole
JPEG_DAMAGE = (
    "premature end",
    "bad huffman",
    "found marker",
    "corrupt jpeg data: bad",
    "invalid sos",
    "inconsistent progression",
    "huffman table",
    "corrupt jpeg data: premature",
)


# DCT-II basis for the 8 lowest frequencies of a 32-sample signal (the scale does not matter: phash
# compares coefficients with their median).
_N = np.arange(32)
_DCT8 = np.cos(np.pi * np.arange(8)[:, None] * (2 * _N[None, :] + 1) / 64).astype(np.float64)
_BIT_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's RGB -> L


OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")  # Python object addresses: new on every run


@contextmanager
def decode_errors() -> Iterator[None]:
    """Map every way Pillow fails on a file to a DecodeError with a stable reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except DecodeError:
        raise
    except FileNotFoundError as e:
        raise DecodeError("missing_file", f"file not found: {e.filename}") from None
    except Image.DecompressionBombError as e:
        raise DecodeError("decompression_bomb", str(e)) from None
    except OSError as e:
        text = OBJECT_REPR.sub("", str(e)).strip()  # "cannot identify image file <_io.BytesIO object at 0x7f..>"
        if "truncated" in text or "broken data stream" in text or "incomplete" in text:
            raise DecodeError("truncated", text) from None
        if isinstance(e, Image.UnidentifiedImageError) or "cannot identify" in text:
            raise DecodeError("unreadable", f"not an image Pillow can read: {text}") from None
        raise DecodeError("unreadable", text) from None
    except (ValueError, SyntaxError, EOFError) as e:
        raise DecodeError("unreadable", f"{type(e).__name__}: {e}") from None


def open_image(
    path: str | io.BytesIO, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None, frame: int = 0
) -> Image.Image:
    """Open and fully decode an image file (one frame of it), mapping every failure to a DecodeError reason.

    With `max_side`, a JPEG is decoded at the smallest DCT-domain scale (1/2, 1/4, 1/8) that is still
    at least the target size: the scaled inverse DCT is itself a good low-pass filter, measured no
    worse than full decoding then resizing (benchmarks/export.py), at a fraction of the cost.
    """
    with decode_errors():
        im = Image.open(path)
        w, h = im.size
        if w * h > max_pixels:
            raise DecodeError(
                "decompression_bomb",
                f"{w}x{h} = {w * h} pixels is over the limit of {max_pixels}; raise "
                "`max_pixels` in the source if the image is genuine",
            )
        if frame:
            n = getattr(im, "n_frames", 1)
            if frame >= n:
                raise DecodeError("missing_frame", f"frame {frame} requested, the file has {n}")
            im.seek(frame)
        if max_side and im.format == "JPEG" and max(w, h) > max_side:
            scale = max_side / max(w, h)
            im.draft(im.mode if im.mode in ("L", "RGB") else None, (math.ceil(w * scale), math.ceil(h * scale)))
        im.load()
    return im


def read_file(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """A whole input file, after checking its size against the budget."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):  # a FIFO would block, a device never end
            raise DecodeError("not_a_regular_file", "not a regular file (a FIFO, device or socket); only regular files are read")
        if st.st_size > max_bytes:
            raise DecodeError(
                "over_budget",
                f"the file has {st.st_size} bytes, over the limit of {max_bytes}; raise "
                "`max_file_bytes` in the source if it is genuine",
            )
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # a file that grows while read is still held to the budget
        if len(data) > max_bytes:
            raise DecodeError("over_budget", f"the file grew past the limit of {max_bytes} bytes while read")
        return data
    except FileNotFoundError as e:
        raise DecodeError("missing_file", f"file not found: {e.filename}") from None
    except IsADirectoryError:
        raise DecodeError("unreadable", f"{path} is a folder, not a file") from None
    except PermissionError as e:
        raise DecodeError("unreadable", f"no permission to read {e.filename}") from None


def file_hash(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def hash_file(path: str) -> str:
    """`file_hash` of a file read in blocks (volumes are not held in memory twice)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def display_image(im: Image.Image) -> Image.Image:
    """An 8-bit L or RGB image: 16-bit and float data by the documented percentile rule, alpha dropped."""
    if im.mode in ("L", "RGB"):
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(to_uint8(np.asarray(im)))
    if im.mode in ("1", "LA", "La") or (im.mode == "P" and _gray_palette(im)):
        return im.convert("L")
    return im.convert("RGB")


def _gray_palette(im: Image.Image) -> bool:
    palette = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    return bool(len(palette)) and bool((palette == palette[:, :1]).all())


def fit(im: Image.Image, max_side: int | None) -> Image.Image:
    """Shrink so the longer side is at most `max_side`, keeping the aspect ratio; never enlarges.

    A JPEG already reduced in the DCT domain needs only a small last step (Lanczos). Other images are
    box-reduced to at most twice the target and then resized with a bicubic filter: Pillow's `thumbnail`
    rule, so quality equals a plain `thumbnail` while costing less than Lanczos at full size.
    """
    if not max_side or max(im.size) <= max_side:
        return im
    drafted = getattr(im, "format", None) == "JPEG"
    im = im.copy() if im.readonly else im
    im.thumbnail(
        (max_side, max_side), Image.Resampling.LANCZOS if drafted else Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP
    )
    return im


def encode(im: Image.Image, fmt: str, quality: int = 90, keep_metadata: bool = False) -> bytes:
    """JPEG (baseline, 4:2:0, `quality`) or PNG (lossless, zlib level 3) bytes, with no embedded metadata
    (Pillow would carry a decoded JPEG's comment and a PNG's colour profile over) unless `keep_metadata`:
    then the EXIF, XMP, comment and ICC profile the source had are written again."""
    buf = io.BytesIO()
    info = im.info if keep_metadata else {}
    carried = {k: info[k] for k in ("exif", "icc_profile", "xmp", "comment") if info.get(k)}
    if fmt == "jpg":
        im.save(buf, "JPEG", quality=quality, comment=carried.pop("comment", b""), **carried)
    elif fmt == "png":
        carried.pop("xmp", None)
        if keep_metadata and "comment" in carried:
            from PIL import PngImagePlugin

            text = PngImagePlugin.PngInfo()
            comment = carried.pop("comment")
            text.add_text("Comment", comment.decode("latin-1") if isinstance(comment, bytes) else str(comment))
            carried["pnginfo"] = text
        if not keep_metadata:
            carried["icc_profile"] = None
        im.save(buf, "PNG", compress_level=3, **carried)
    else:
        raise ValueError(f"image format {fmt!r}: use jpg or png")
    return buf.getvalue()


def phash_gray32(gray: np.ndarray) -> int:
    """64-bit perceptual hash of a 32x32 grayscale array (imagehash's DCT construction)."""
    low = (_DCT8 @ gray.astype(np.float64) @ _DCT8.T).ravel()
    middle = np.sort(low)[31:33]  # the median of 64 values, as np.median takes it, at a third of the cost
    bits = low > (middle[0] + middle[1]) / 2
    return int(_BIT_WEIGHTS[bits].sum(dtype=np.uint64))


@lru_cache(maxsize=64)
def _band_edges(n: int) -> np.ndarray:
    return (np.arange(33) * n) // 32


ROWS_PER_BAND = 8  # rows summed per band of the 32x32 grid (at most)


@lru_cache(maxsize=64)
def _row_plan(height: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Band edges, the row step within a band, and how many rows each band then sums."""
    edges = _band_edges(height)
    step = -(-int(np.diff(edges).max()) // ROWS_PER_BAND)
    return edges, step, np.array([len(range(lo, hi, step)) for lo, hi in zip(edges[:-1], edges[1:])])


def _row_band_sums(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per band: the sum of up to ROWS_PER_BAND evenly spaced rows (contiguous vector adds), and the count."""
    edges, step, counts = _row_plan(flat.shape[0])
    if flat.shape[0] % 32 == 0:
        sums = flat.reshape(32, flat.shape[0] // 32, flat.shape[1])[:, ::step].sum(axis=1, dtype=np.uint16)
    else:
        sums = np.stack([flat[lo:hi:step].sum(axis=0, dtype=np.uint16) for lo, hi in zip(edges[:-1], edges[1:])])
    return sums, counts


def luma32(pixels: np.ndarray) -> np.ndarray:
    """A 32x32 grid of mean luma (Pillow's "L" weights) from an (H, W) or (H, W, C) uint8 array.

    Each cell averages its 1/32 of the columns in full and up to 8 evenly spaced rows of its 1/32 of
    the rows: the box filter that imagehash's Lanczos resize approximates, sampled vertically so the
    cost is bounded (32 x 8 rows of integer vector adds whatever the image height). Extra channels
    (alpha) get weight 0. Measured against the full box on retina/ihc and in benchmarks/dedup.py.
    """
    pixels = pixels if pixels.ndim == 3 else pixels[:, :, None]
    height, width, channels = pixels.shape
    weights = np.zeros(channels)
    weights[:3] = LUMA_WEIGHTS if channels >= 3 else 1.0
    if height < 32 or width < 32:  # enlarge instead: there is nothing to average
        gray = (pixels @ weights).astype(np.float32)
        return np.asarray(Image.fromarray(gray).resize((32, 32), Image.Resampling.BICUBIC), np.float64)
    rows, counts = _row_band_sums(pixels.reshape(height, width * channels))
    # an explicit float64 copy: numpy's mixed-type matmul is four times slower on the same data
    luma_columns = (rows.astype(np.float64).reshape(32 * width, channels) @ weights).reshape(32, width)
    sums = np.add.reduceat(luma_columns, _band_edges(width)[:-1], axis=1)
    return sums / np.outer(counts, np.diff(_band_edges(width)))


def phash_array(pixels: np.ndarray) -> int:
    return phash_gray32(luma32(pixels))


def phash_image(im: Image.Image) -> int:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return phash_array(to_uint8(np.asarray(im)))
    if im.mode not in ("L", "RGB", "RGBA"):
        im = im.convert("RGB" if im.mode in ("CMYK", "YCbCr", "P", "PA", "RGBX", "RGBa", "LAB", "HSV") else "L")
    return phash_array(pixel_array(im))


def hash_buffer(buffer, header: str) -> str:
    h = xxhash.xxh3_128(header.encode())
    h.update(buffer)
    return h.hexdigest()


def pixel_array(im: Image.Image) -> np.ndarray:
    """An image's pixels as an (H, W, bytes per pixel) uint8 array, without a copy where Pillow can
    export them (Arrow C interface; RGB then comes as RGBX with X = 255)."""
    try:
        buffer = pa.array(im).buffers()[-1]
    except (ValueError, TypeError, pa.ArrowException):  # stored in several blocks
        buffer = im.tobytes()
    return np.frombuffer(buffer, np.uint8).reshape(im.height, im.width, -1)


def image_facts(im: Image.Image) -> PixelFacts:
    """Facts from a decoded Pillow image.

    The content hash covers the packed pixel bytes (`im.tobytes()`) after a "MODE:WxH" header, so
    anyone can recompute it, and equal pixels hash equal whatever the container (or decoder) was.
    """
    header = f"{im.mode}:{im.width}x{im.height}"
    if im.mode not in ("L", "RGB", "RGBA"):
        return PixelFacts(im.width, im.height, len(im.getbands()), hash_buffer(im.tobytes(), header), phash_image(im))
    pixels = pixel_array(im)
    packed = im.tobytes() if pixels.shape[2] != len(im.getbands()) else pixels
    return PixelFacts(im.width, im.height, len(im.getbands()), hash_buffer(packed, header), phash_array(pixels))


def file_facts(
    file: str | io.BytesIO,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    damaged: str = "quarantine",
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> PixelFacts:
    """Facts for an image file (a path or a binary file object), with the hash of its bytes.

    JPEGs, the bulk of every public dataset, go from libjpeg-turbo straight into a numpy buffer
    (simplejpeg), skipping Pillow's image object: the same library, the same accurate IDCT and fancy
    upsampling, so the same pixels and pixel hash (tested). A JPEG whose data is cut short or corrupt
    (where Pillow would fill the rest grey and say nothing) is a DecodeError `truncated`, or, with
    `damaged="keep"`, kept with a `warning`. Anything else is decoded by Pillow, which names the failure.
    """
    data = file.getvalue() if isinstance(file, io.BytesIO) else read_file(file, max_bytes)
    if len(data) > max_bytes:
        raise DecodeError("over_budget", f"{len(data)} bytes, over the limit of {max_bytes}; raise `max_file_bytes`")
    digest = file_hash(data)
    warning = ""
    try:
        facts = _jpeg_facts(data, max_pixels)
    except DamagedJPEG as e:
        if damaged != "keep":
            raise DecodeError(
                "truncated",
                f"damaged JPEG data ({e}): the decoder would fill the rest with grey; "
                "set `damaged_images: keep` in the source to keep such images",
            ) from None
        warning = f"damaged JPEG data ({e}); kept as decoded, the lost part grey"
        facts = _jpeg_facts(data, max_pixels, strict=False)
    if facts is None:
        im = open_image(io.BytesIO(data), max_pixels)
        facts, frames = image_facts(im), getattr(im, "n_frames", 1)
        return PixelFacts(**{**facts.__dict__, "file_hash": digest, "frames": frames})
    return PixelFacts(**{**facts.__dict__, "file_hash": digest, "warning": warning})


_JPEG_MODES = {"YCbCr": ("RGB", "RGB", 3), "RGB": ("RGB", "RGB", 3), "Gray": ("L", "GRAY", 1)}


def _jpeg_facts(data: bytes, max_pixels: int, strict: bool = True) -> PixelFacts | None:
    """simplejpeg's decode, or None where it declines (not a JPEG, CMYK, over the pixel budget: Pillow then
    decodes or names the failure); DamagedJPEG where libjpeg warns that image data was lost."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        height, width, space, _ = simplejpeg.decode_jpeg_header(data)
        if space not in _JPEG_MODES or width * height > max_pixels:
            return None
        mode, out, channels = _JPEG_MODES[space]
        pixels = simplejpeg.decode_jpeg(data, colorspace=out, strict=strict)
    except ValueError as e:
        text = str(e)
        if strict and any(k in text.lower() for k in JPEG_DAMAGE):
            raise DamagedJPEG(text.strip()) from None
        if strict and ("extraneous bytes" in text or "jfif revision" in text.lower()):
            return _jpeg_facts(data, max_pixels, strict=False)  # harmless: the image is whole
        return None
    except Exception:  # whatever else it declines or trips on, Pillow decodes again and names the failure
        return None
    return PixelFacts(width, height, channels, hash_buffer(pixels, f"{mode}:{width}x{height}"), phash_array(pixels))


def array_facts(raw: np.ndarray, rendered: np.ndarray) -> PixelFacts:
    """Facts for a frame decoded from DICOM/NIfTI: hash the raw values, phash what a person sees."""
    raw = np.ascontiguousarray(raw)
    height, width = raw.shape[:2]
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    return PixelFacts(
        width=int(width),
        height=int(height),
        channels=int(channels),
        pixel_hash=hash_buffer(memoryview(raw).cast("B"), f"{raw.dtype.str}:{raw.shape}"),
        phash=phash_array(rendered),
    )


def window_to_uint8(values: np.ndarray, center: float, width: float, invert: bool = False) -> np.ndarray:
    """The documented 16-bit -> 8-bit rule: linear window [c - w/2, c + w/2] onto 0..255, clipped."""
    width = max(float(width), 1e-6)
    lo = center - width / 2.0
    out = np.clip((values.astype(np.float32) - lo) * (255.0 / width), 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def percentile_window(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """A window covering the central intensities, for data with no window of its own."""
    lo, hi = np.percentile(values, [low, high])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return (float(lo) + float(hi)) / 2.0, max(float(hi) - float(lo), 1.0)


def to_uint8(values: np.ndarray) -> np.ndarray:
    center, width = percentile_window(values)
    return window_to_uint8(values, center, width)


def rle_positions(positions: np.ndarray, total: int) -> list[int]:
    """COCO uncompressed RLE counts from sorted column-major foreground positions."""
    if positions.size == 0:
        return [total]
    breaks = np.flatnonzero(np.diff(positions) != 1)
    starts = np.concatenate(([positions[0]], positions[breaks + 1]))
    ends = np.concatenate((positions[breaks] + 1, [positions[-1] + 1]))
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = total - ends[-1]
    return counts.tolist() if counts[-1] else counts[:-1].tolist()


def rle_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    flat = np.zeros(height * width, dtype=bool)
    pos, value = 0, False
    for c in counts:
        if value:
            flat[pos : pos + c] = True
        pos += c
        value = not value
    return flat.reshape(width, height).T


def mask_regions(
    mask: np.ndarray, names: dict[int, str], background: int = 0, min_pixels: int = 1
) -> tuple[list[dict], list[int]]:
    """Each connected region (8-connectivity) of each label value becomes an ROI.

    Returns the ROIs and the label values found in the mask that `names` does not cover.
    """
    from scipy import ndimage

    height, width = mask.shape
    total = height * width
    rois: list[dict] = []
    # the work is done inside the box around every non-background pixel: a lesion or a lung is a small part of
    # most images, and labelling the whole image costs milliseconds per record
    fg = mask != background
    rows_in, cols_in = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    if not len(rows_in):
        return [], []
    top, left = int(rows_in[0]), int(cols_in[0])
    crop = mask[top : int(rows_in[-1]) + 1, left : int(cols_in[-1]) + 1]
    if crop.dtype == np.uint8:
        values = [v for v in np.flatnonzero(np.bincount(crop.ravel(), minlength=256)).tolist() if v != background]
    else:
        values = [int(v) for v in np.unique(crop) if int(v) != background]
    unknown = [v for v in values if v not in names]
    structure = np.ones((3, 3), dtype=bool)
    for value in values:
        if value not in names:
            continue
        labelled, n = ndimage.label(crop == value, structure=structure)
        for index, box in enumerate(ndimage.find_objects(labelled), start=1):
            if box is None:
                continue
            ys, xs = box
            region = labelled[box] == index
            pixels = int(region.sum())
            if pixels < min_pixels:
                continue
            x0, y0 = xs.start + left, ys.start + top
            cols, rows = np.nonzero(region.T)
            positions = (cols + x0) * height + (rows + y0)
            rois.append(
                {
                    "label": names[value],
                    "bbox": [x0 / width, y0 / height, (xs.stop + left) / width, (ys.stop + top) / height],
                    "area": pixels / total,
                    "rle": rle_positions(positions, total),
                }
            )
    return rois, unknown
