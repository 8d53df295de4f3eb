"""`medloom export --exclude LOOM`: the records holding a benchmark loom's images or questions
(`curate/decontam.py`) are left out of the export, whatever its format, and the export says so.

The records are found before the export starts and handed to it as a Parquet file of ids (`selection.Excluded`),
which the one selection rule of every format (`view/selection.py`) leaves out; their fingerprint is part of the
export's plan, so a shard export made without them is not resumed as one made with them. After the export, its
folder holds `excluded.json` (each record left out and why: the `leakage --against` report), its `manifest.json`
an `excluded` summary, and its dataset card (`README.md`, when the format writes one) a section saying what was
left out. An export made again without `--exclude` loses all three.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ExportError
from ..outputs import OutputFolder
from ..view.selection import Excluded

REPORT = "excluded.json"
MANIFEST = "manifest.json"
CARD = "README.md"
CARD_SECTION = "\n## Decontamination\n"


@contextmanager
def excluding(loom: Path, request, *, wait: bool = False) -> Iterator[tuple[object, object]]:
    """(the request with its `excluded` records filled in, the contamination report) for the block's export."""
    from ..curate.decontam import contamination

    others = [Path(p) for p in dict.fromkeys(request.exclude)]
    try:
        report = contamination(Path(loom), others, wait=wait)
    except ValueError as e:
        raise ExportError(f"--exclude: {e}") from None
    ids = sorted(report.ids())
    with tempfile.TemporaryDirectory(prefix="medloom-exclude-") as folder:
        path = Path(folder) / "excluded.parquet"
        pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), path)
        fingerprint = hashlib.sha256("\n".join(ids).encode()).hexdigest()
        yield replace(request, excluded=Excluded(str(path), fingerprint)), report


def summary(report) -> dict:
    """What the manifest says of the records left out."""
    return {
        "against": report.against,
        "against_splits": report.against_splits,
        "records": report.contaminated,
        "of": report.records,
        "by_reason": report.by_reason,
        "near": report.near,
        "question_overlap": report.overlap,
        "file": REPORT,
    }


def summary_line(excluded: dict) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in excluded["by_reason"].items() if v) or "none found"
    return (
        f"excluded {excluded['records']} of {excluded['of']} records holding images or questions of "
        f"{', '.join(excluded['against'])} ({reasons}); each and why in {excluded['file']}"
    )


def record(out: Path, report) -> dict | None:
    """Write what was left out into the export's folder (`report` None: remove an earlier export's note)."""
    out = Path(out)
    if not out.is_dir():
        return None
    folder = OutputFolder(out)
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if MANIFEST in folder.owned else None
    card = (out / CARD).read_text(encoding="utf-8").split(CARD_SECTION)[0] if CARD in folder.owned else None
    if report is None:
        folder.remove_many([REPORT])
        if isinstance(manifest, dict) and manifest.pop("excluded", None) is not None:
            folder.write_bytes(MANIFEST, json.dumps(manifest, indent=1).encode())
        if card is not None and CARD_SECTION in (out / CARD).read_text(encoding="utf-8"):
            folder.write_bytes(CARD, card.encode())
        return None
    noted = summary(report)
    folder.write_bytes(REPORT, json.dumps(report.as_dict(), indent=1, ensure_ascii=False).encode())
    if isinstance(manifest, dict):
        manifest["excluded"] = noted
        folder.write_bytes(MANIFEST, json.dumps(manifest, indent=1).encode())
    if card is not None:
        reasons = "\n".join(f"- {k}: {v}" for k, v in noted["by_reason"].items())
        section = (
            f"{CARD_SECTION}\n{noted['records']} of the loom's {noted['of']} records were excluded from this export "
            f"because they hold an image or a question of the {' and '.join(noted['against_splits'])} records of "
            f"{', '.join(noted['against'])} (`medloom export --exclude`; perceptual-hash distance at most "
            f"{noted['near']}, question 3-gram overlap at least {noted['question_overlap']}):\n\n{reasons}\n\n"
            f"Each excluded record, with the benchmark record it matches and why, is listed in `{REPORT}`.\n"
        )
        folder.write_bytes(CARD, (card.rstrip("\n") + "\n" + section).encode())
    return noted
