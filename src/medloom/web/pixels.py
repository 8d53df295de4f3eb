"""The routes of `medloom serve` that answer with pixels: thumbnails (from the packs `serve` made first, or made
now and kept), a record's image with the window and level asked for, and an ROI's mask as a coloured overlay.
Files are found by record id only, through the catalog."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from ..imaging import encode, fit, rle_decode
from .params import IMAGE_SIDE, label_colors, number, proposal_color, required, whole
from .query import BadRequest, NotFound
from .thumbs import SIDE, read_index, read_thumb, render_thumb, thumb_key, write_pack


class PixelRoutes:
    """Mixed into `LoomApp` (which holds `index`, `thumbs` and the thumbnail index's lock and stamp)."""

    def thumb(self, request):
        from starlette.responses import Response

        params = request.query_params
        record_id = required(params, "id")
        pixel_hash = params.get("h")
        row = None
        if not (pixel_hash and self.index.has_record(record_id, pixel_hash)):  # the grid names the hash
            row = self.index.render_row(record_id)
            pixel_hash = row["pixel_hash"]
        key = thumb_key(record_id, pixel_hash)
        where = self._thumb_index().get(key)
        if where is not None:
            data = read_thumb(self.thumbs, where)
        else:  # a record ingested after `serve` started: made now, and kept
            row = row or self.index.render_row(record_id)
            data = render_thumb(row, self.index.sources(), {}, SIDE)
            self._cache_thumb(key, data)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    def _thumb_index(self) -> dict:
        """The packs' index, read again when the folder changed (a pack added)."""
        try:
            stamp = os.stat(self.thumbs).st_mtime_ns
        except OSError:
            return {}
        with self._thumb_lock:
            if stamp != self._thumb_stamp:
                self._thumb_keys, self._thumb_stamp = read_index(self.thumbs), stamp
            return self._thumb_keys

    def _cache_thumb(self, key: str, data: bytes) -> None:
        from ..outputs import OutputFolder

        if self.thumbs.name in OutputFolder(self.thumbs.parent).owned_dirs:
            try:
                write_pack(self.thumbs, [(key, data)])
            except OSError:
                pass  # a full disk: the thumbnail is served, not kept

    def image(self, request):
        """The record rendered (at most 1024 px), with the window and level asked for (`wc`, `ww`)."""
        from starlette.responses import Response

        from ..sources import RENDERED_READERS
        from ..view.render import record_image

        params = request.query_params
        row = self.index.render_row(required(params, "id"))
        sources = self.index.sources()
        if row["source"] not in sources:
            raise NotFound(f"source {row['source']!r} is no longer in the catalog")
        center, width = number(params, "wc"), number(params, "ww")
        if center is not None or width is not None:
            if sources[row["source"]]["reader"] not in RENDERED_READERS or not row.get("render"):
                raise BadRequest("window and level apply to DICOM and NIfTI records only")
            if width is not None and width <= 0:
                raise BadRequest("the window width must be positive")
            stored = row["render"]
            row["render"] = dict(
                stored,
                window_center=center if center is not None else stored["window_center"],
                window_width=width if width is not None else stored["window_width"],
                window_source="manual" if stored["window_source"] == "voi_lut" else stored["window_source"],
            )
        im = record_image(row, {"sources": sources}, {}, IMAGE_SIDE)
        return Response(encode(fit(im, IMAGE_SIDE), "png"), media_type="image/png")

    def mask(self, request):
        from starlette.responses import Response

        i = whole(required(request.query_params, "roi"), "roi")
        row = self.index.render_row(required(request.query_params, "id"))
        proposed = request.query_params.get("source") == "proposal"  # a method's ROI, in the proposals' colours
        rois = self.index.proposals(row["id"]) if proposed else row.get("rois") or []
        if not 0 <= i < len(rois):
            raise NotFound(f"record {row['id']!r} has no {'proposed ' if proposed else ''}ROI {i}")
        roi = rois[i]
        if not roi.get("rle"):
            raise NotFound(f"ROI {i} of record {row['id']!r} has no mask")
        mask = rle_decode(roi["rle"], row["height"], row["width"])
        color = proposal_color(roi["accepted"]) if proposed else label_colors([r["label"] for r in rois])[roi["label"]]
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        rgba[mask > 0] = [int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16), 110]
        im = Image.fromarray(rgba, "RGBA")
        im.thumbnail((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        return Response(buf.getvalue(), media_type="image/png")
