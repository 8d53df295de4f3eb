"""Embedded metadata in exported images: removed unless the user asks to keep it.

Photographs and scans carry EXIF (camera, dates, GPS, names), XMP, JPEG comments and PNG text chunks, any
of which can identify a patient or an institution. Re-encoded images are written without them; images
copied byte for byte (`--image-format keep`) have the segments and chunks that carry them cut out, leaving
the coded image data untouched. What stays: JPEG's JFIF header, Adobe colour transform and ICC colour
profile; PNG's critical chunks and the colour, transparency and pixel-size chunks.
"""

from __future__ import annotations

import struct

KEEP_JPEG_APP = ((0xE0, b"JFIF\x00"), (0xE2, b"ICC_PROFILE\x00"), (0xEE, b"Adobe"))
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn have no length
KEEP_PNG = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"bKGD", b"pHYs"})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class MetadataError(ValueError):
    """A file whose structure could not be walked: it cannot be shown free of metadata."""


def strip(data: bytes) -> bytes:
    """The image without embedded metadata (JPEG or PNG); anything else is refused."""
    if data[:2] == b"\xff\xd8":
        return strip_jpeg(data)
    if data[:8] == PNG_SIGNATURE:
        return strip_png(data)
    raise MetadataError("not a JPEG or PNG file: its metadata cannot be removed byte for byte")


def _keep_app(marker: int, payload: bytes) -> bool:
    return any(marker == m and payload.startswith(sig) for m, sig in KEEP_JPEG_APP)


def strip_jpeg(data: bytes) -> bytes:
    """Drop COM and APPn segments (but JFIF, ICC and Adobe) everywhere, and anything after EOI."""
    out = bytearray(b"\xff\xd8")
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise MetadataError(f"no JPEG marker at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI: trailing bytes (appended data) are not part of the image
            out += b"\xff\xd9"
            return bytes(out)
        if marker in STANDALONE:
            out += bytes((0xFF, marker))
            continue
        if i + 2 > n:
            raise MetadataError("a JPEG segment is cut short")
        length = struct.unpack(">H", data[i : i + 2])[0]
        segment = data[i : i + length]
        if len(segment) < max(length, 2):
            raise MetadataError("a JPEG segment is cut short")
        i += length
        drop = marker == 0xFE or (0xE0 <= marker <= 0xEF and not _keep_app(marker, segment[2:]))
        if not drop:
            out += bytes((0xFF, marker)) + segment
        if marker == 0xDA:  # SOS: entropy-coded data up to the next marker that is not RSTn or stuffing
            j = i
            while True:
                j = data.find(b"\xff", j)
                if j < 0 or j + 1 >= n:
                    raise MetadataError("the JPEG data ends without an EOI marker")
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    j += 2 if nxt != 0xFF else 1
                    continue
                break
            out += data[i:j]
            i = j
    raise MetadataError("the JPEG data ends without an EOI marker")


def strip_png(data: bytes) -> bytes:
    """Keep the critical chunks and the colour, transparency and pixel-size chunks; drop text, EXIF, time and
    every other ancillary chunk, and anything after IEND."""
    out = bytearray(PNG_SIGNATURE)
    i = 8
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        end = i + 12 + length
        if end > len(data):
            raise MetadataError("a PNG chunk is cut short")
        if kind in KEEP_PNG or not kind[:1].islower():  # unknown critical chunks must stay (the image needs them)
            out += data[i:end]
        i = end
        if kind == b"IEND":
            return bytes(out)
    raise MetadataError("the PNG data ends without an IEND chunk")
