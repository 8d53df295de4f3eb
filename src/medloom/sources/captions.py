"""Report or reading files as a record's source caption: `caption_files: "ClinicalReadings/{stem}.txt"` (the
Shenzhen and Montgomery chest X-ray sets' clinical readings, one text file per image), shared by the readers that
take the key. Each file is read under a byte budget and only from inside the source's roots; a missing or
unreadable one leaves the record without a caption and says so in a warning row."""

from __future__ import annotations

import os
import stat

from pydantic import BaseModel, ConfigDict, Field

from ..records import quarantine_row
from .base import Scan, decode_text, display_name, inside, source_roots


class CaptionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the text file of each image, under the source root: {stem} (file name without its suffix), {name} (file
    # name), {dir} (its folder under the root), {uri} (its path under the root)
    caption_files: str | None = None
    caption_max_bytes: int = Field(65536, gt=0)  # bytes read of each; a longer file is cut there (a warning says so)


class Captions:
    """Reads `caption_files` for a source's images."""

    def __init__(self, source: dict, opts: CaptionOptions) -> None:
        self.source, self.template, self.budget = source, opts.caption_files or "", opts.caption_max_bytes
        self.roots = source_roots(source)
        self.folders: dict[str, str] = {}

    def warn(self, scan: Scan, uri: str, reason: str, message: str) -> str:
        scan.quarantine.append(quarantine_row(self.source["name"], uri, reason, message, scope="warning"))
        return ""

    def read(self, scan: Scan, uri: str) -> str:
        """The caption of the image at `uri` (its path under the root), or "" with a warning row."""
        folder, _, name = uri.rpartition("/")
        try:
            rel = self.template.format(stem=os.path.splitext(name)[0], name=name, dir=folder or ".", uri=uri)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"caption_files: {self.template!r} cannot be filled ({e}); use {{stem}}, {{name}}, {{dir}}, {{uri}}"
            ) from None
        path = os.path.normpath(os.path.join(self.source["root"], rel))
        if not inside(path, self.roots, self.folders):
            return self.warn(scan, uri, "outside_root", f"its caption file {rel} lies outside the source's roots; not read")
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return self.warn(scan, uri, "missing_caption_file", f"its caption file {rel} is not a regular file")
            with open(path, "rb") as f:
                data = f.read(self.budget + 1)
        except FileNotFoundError:
            return self.warn(scan, uri, "missing_caption_file", f"no caption file {rel}; the record has no caption")
        except OSError as e:
            return self.warn(scan, uri, "missing_caption_file", f"its caption file {rel} cannot be read: {e.strerror}")
        cut = len(data) > self.budget
        data = data[: self.budget]
        text = None
        for trim in range(4 if cut else 1):  # a cut may split a UTF-8 character: drop its first bytes
            try:
                text = decode_text(data[: len(data) - trim], display_name(rel))
                break
            except ValueError as e:
                problem = str(e)
        if text is None:
            return self.warn(scan, uri, "unreadable_caption_file", problem)
        if cut:
            message = f"{rel} is over {self.budget} bytes; its start is kept (raise `caption_max_bytes`)"
            self.warn(scan, uri, "caption_truncated", message)
        return text.strip()
