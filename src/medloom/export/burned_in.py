"""Burned-in text: names, dates and institutions that scanners print into the pixels.

The heuristic (`text_box`) looks at every channel of the rendered 8-bit frame, so text of any colour and any
grey counts, in both polarities (light on dark, dark on light), anywhere in the image:

- a morphological top-hat (7 x 7) keeps thin marks that stand out from their surroundings by at least
  48 grey levels in one channel; closing gaps of up to 5 pixels along rows joins the marks into lines;
- a line is text-like when it is 5 to 48 pixels high and at least 2.5 times as wide, covers 12-75 % of
  its area with marks, is crossed by at least one stroke per two line heights of width, holds at least 5
  glyphs of at least 0.45 of its height (touching glyphs count by width), its strongest marks share one
  ink (spread at most 32 levels) and that ink stands out from the background between the marks by 1.5
  times the background's own spread (speckle, noise and textures do not).

Images of 1024 pixels or more are also looked at halved, for large type. `scan` applies it to the frames
`frames_to_check` names: every frame up to `MAX_FRAMES`, else that many evenly spaced ones, the first and
the last included. With `ocr`, frames where the heuristic finds nothing are read by the `tesseract`
program (at most `OCR_FRAMES` of them, each within `OCR_SECONDS`): two words of three or more letters or
digits read with confidence (75 of 100) count as text; what was read is never kept. Both flag for review:
their rates on pydicom's real images and on generated cases are in the README (`benchmarks/burned_in.py`).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_FRAMES = 32
OCR_FRAMES = 4
OCR_SECONDS = 30.0
CONTRAST, SIZE, GAP = 48, 7, 5
EIGHT = np.ones((3, 3), bool)


@dataclass
class Finding:
    frame: int  # index in the file (0 for a single-frame file)
    box: tuple[int, int, int, int] | None  # top, left, bottom, right; None when OCR found it
    how: str  # "heuristic" | "ocr"

    def reason(self) -> str:
        where = f"frame {self.frame}" + (
            f", rows {self.box[0]}-{self.box[2]}, columns {self.box[1]}-{self.box[3]}" if self.box else ""
        )
        return ("text-like marks in the image" if self.how == "heuristic" else "text read by OCR") + f" ({where})"


def frames_to_check(n: int, budget: int = MAX_FRAMES) -> list[int]:
    """Every frame up to `budget` (0: no limit); beyond, `budget` evenly spaced frames, first and last included."""
    if n <= budget or budget <= 0:
        return list(range(n))
    if budget == 1:
        return [0]
    return sorted({round(i * (n - 1) / (budget - 1)) for i in range(budget)})


def _channels(frame: np.ndarray) -> list[np.ndarray]:
    if frame.ndim == 2:
        return [frame]
    if np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 1], frame[..., 2]):
        return [np.ascontiguousarray(frame[..., 0])]
    return [np.ascontiguousarray(frame[..., c]) for c in range(3)]


def _halved(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
    x = frame[:h, :w].astype(np.float32).reshape(h // 2, 2, w // 2, 2, *frame.shape[2:]).mean(axis=(1, 3))
    return np.round(x).astype(np.uint8)


def _text_lines(channel: np.ndarray, strength: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes of the text-like lines in one channel, given how far each pixel stands out (a top-hat)."""
    from scipy import ndimage

    marks = strength >= CONTRAST
    joined = ndimage.minimum_filter1d(ndimage.maximum_filter1d(marks.view(np.uint8), GAP, axis=1), GAP, axis=1)
    labelled, _ = ndimage.label(joined.astype(bool) | marks, structure=EIGHT)
    found = []
    for i, box in enumerate(ndimage.find_objects(labelled), 1):
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        if not (5 <= h <= 48 and w >= 2.5 * h):
            continue
        line = labelled[box] == i
        m = marks[box] & line
        if not 0.12 <= m.sum() / line.sum() <= 0.75:
            continue
        rises = (np.diff(m.astype(np.int8), axis=1) == 1).sum(axis=1)
        if np.percentile(rises, 75) < 0.5 * w / h:  # fewer strokes than one per glyph width
            continue
        glyphs, _ = ndimage.label(m, structure=EIGHT)
        units = 0
        for g in ndimage.find_objects(glyphs):
            gh, gw = g[0].stop - g[0].start, g[1].stop - g[1].start
            if gh >= max(4, 0.45 * h):  # glyphs reach most of the line's height; touching ones count by width
                units += max(1, round(gw / (0.8 * gh)))
        if units < 5:
            continue
        values, stands_out = channel[box].astype(np.float32), strength[box]
        ink = values[m & (stands_out >= 0.7 * stands_out[m].max())]
        if ink.std() > 32:  # the strongest marks do not share one ink
            continue
        background = values[~ndimage.binary_dilation(m, structure=EIGHT)]
        if background.size < 8:
            background = values[~m]
        if background.size == 0:
            continue
        q1, median, q3 = np.percentile(background, (25, 50, 75))
        if abs(float(np.median(ink)) - median) < 1.5 * (q3 - q1 + 1):
            continue
        found.append((box[0].start, box[1].start, box[0].stop, box[1].stop))
    return found


def text_box(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of the widest text-like line in an 8-bit frame (grey or RGB), or None."""
    from scipy import ndimage

    if frame.ndim not in (2, 3) or min(frame.shape[:2]) < 32:
        return None
    for scale in (1, 2) if max(frame.shape[:2]) >= 1024 else (1,):
        image = frame if scale == 1 else _halved(frame)
        lines = []
        for channel in _channels(image.astype(np.uint8, copy=False)):
            low = ndimage.maximum_filter(ndimage.minimum_filter(channel, size=SIZE), size=SIZE)  # opening
            high = ndimage.minimum_filter(ndimage.maximum_filter(channel, size=SIZE), size=SIZE)  # closing
            lines += _text_lines(channel, channel - low)  # light marks
            lines += _text_lines(channel, high - channel)  # dark marks
        if lines:
            top, left, bottom, right = max(lines, key=lambda b: b[3] - b[1])
            return top * scale, left * scale, bottom * scale, right * scale
    return None


def text_like(frame: np.ndarray) -> bool:
    """Whether an 8-bit frame shows a line of text-like marks (see the module docstring)."""
    return text_box(frame) is not None


def tesseract() -> str | None:
    """The tesseract program's path, or None when it is not installed."""
    return shutil.which("tesseract")


def _tesseract_words(image, program: str, seconds: float) -> int:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    try:  # sparse text, locally adaptive thresholds (text over anatomy)
        out = subprocess.run(
            [program, "stdin", "stdout", "--psm", "11", "-c", "thresholding_method=1", "tsv"],
            input=buffer.getvalue(),
            capture_output=True,
            timeout=seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 0
    words = 0
    for row in out.stdout.decode("utf-8", "replace").splitlines()[1:]:
        cells = row.split("\t")
        try:
            confident = len(cells) == 12 and float(cells[10]) >= 75
        except ValueError:
            continue
        words += confident and sum(ch.isalnum() for ch in cells[11]) >= 3
    return words


def ocr_words(frame: np.ndarray, program: str, seconds: float = OCR_SECONDS) -> int:
    """How many words of three or more letters or digits tesseract reads with confidence >= 75 (of 100) in the
    frame, as it is and, when that finds fewer than two and the frame is under 1000 pixels, at twice the size
    (small type). Below 75 it reads words into speckle and bone edges."""
    from PIL import Image

    image = Image.fromarray(frame).convert("L")
    words = _tesseract_words(image, program, seconds)
    if words < 2 and max(image.size) < 1000:
        words = max(words, _tesseract_words(image.resize((image.width * 2, image.height * 2), Image.LANCZOS), program, seconds))
    return words


def scan(n: int, render: Callable[[int], np.ndarray], *, budget: int = MAX_FRAMES, ocr: str | None = None) -> Finding | None:
    """The first frame of `n` (rendered by `render(index)`) that shows text, by the rule of the module docstring."""
    checked = frames_to_check(n, budget)
    for index in checked:
        box = text_box(render(index))
        if box is not None:
            return Finding(index, box, "heuristic")
    if ocr:
        for index in frames_to_check(len(checked), OCR_FRAMES):
            if ocr_words(render(checked[index]), ocr) >= 2:
                return Finding(checked[index], None, "ocr")
    return None
