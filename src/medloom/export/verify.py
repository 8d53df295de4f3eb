"""`medloom verify`: every shard against the export manifest and against its format's rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..outputs import sha256_file
from . import FORMATS, MANIFEST, balanced_ends, read_export_manifest
from .parquet import check_shards as check_parquet
from .webdataset import check_shards as check_tar


@dataclass
class VerifyReport:
    folder: Path
    format: str = ""
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(folder: Path) -> VerifyReport:
    """An export folder, or any folder of tars or a single tar (then only the format rules apply)."""
    folder = Path(folder)
    report = VerifyReport(folder)
    if not folder.exists():
        report.problems.append(f"{folder}: no such folder or file")
        return report
    manifest = read_export_manifest(folder) if folder.is_dir() else None
    if manifest is None:
        tars = (
            [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.name.endswith((".tar", ".tgz", ".tar.gz")))
        )
        report.notes.append(
            f"no {MANIFEST}: not a medloom export, so only the WebDataset format rules were "
            f"checked (on {len(tars)} tar files), not counts, sizes or checksums"
        )
        if not tars:
            report.problems.append(
                f"{folder}: nothing to verify here: no {MANIFEST} of a medloom export and no tar "
                "shards (give the folder `medloom export --out` wrote)"
            )
            return report
        counts, problems = check_tar(tars)
        report.format, report.shards, report.samples = "webdataset", len(tars), sum(counts.values())
        report.problems += problems
        return report
    if manifest.get("format") == "clip-benchmark":
        return verify_clip_benchmark(folder, report)
    if "settings" not in manifest or "splits" not in manifest:
        report.problems.append(
            f"{folder / MANIFEST} is not the manifest of a shard export (WebDataset, Parquet or "
            "clip-benchmark); training-format exports (llava, sharegpt, medmat, swift) have no "
            "shards to verify"
        )
        return report
    report.format = manifest["settings"]["format"]
    if not manifest.get("complete"):
        report.problems.append("the export did not finish: run the same `medloom export` again to complete it")
    listed = [(split, shard) for split, entry in sorted(manifest["splits"].items()) for shard in entry["shards"]]
    present = []
    for _split, shard in listed:
        path = folder / shard["file"]
        if not path.is_file():
            report.problems.append(f"{shard['file']}: listed in the manifest but missing")
            continue
        size = path.stat().st_size
        if size != shard["bytes"]:
            report.problems.append(f"{shard['file']}: {size} bytes, the manifest says {shard['bytes']}")
        elif sha256_file(path) != shard["sha256"]:
            report.problems.append(f"{shard['file']}: sha256 differs from the manifest (the file was changed)")
        present.append(path)
    names = {shard["file"] for _, shard in listed}
    for path in sorted(folder.glob(f"*.{FORMATS[report.format]}")):
        if path.name not in names:
            report.problems.append(f"{path.name}: a shard that the manifest does not list")
    counts, problems = (check_tar if report.format == "webdataset" else check_parquet)(present)
    report.problems += problems
    for _split, shard in listed:
        found = counts.get(shard["file"])
        if found is not None and found != shard["samples"]:
            report.problems.append(f"{shard['file']}: {found} samples, the manifest says {shard['samples']}")
    report.shards, report.samples = len(listed), sum(counts.values())
    if manifest["settings"].get("balance_shards") and manifest.get("complete"):
        check_balance(manifest, report)
    c = manifest.get("counts")
    if c and c["in"] != c["exported"] + c["filtered"] + c["quarantined"]:
        report.problems.append(
            f"counts do not add up: in {c['in']} != exported {c['exported']} + filtered "
            f"{c['filtered']} + quarantined {c['quarantined']}"
        )
    if c and c["exported"] != sum(shard["samples"] for _, shard in listed):
        report.problems.append(
            f"the manifest counts {c['exported']} exported samples, its shards hold "
            f"{sum(shard['samples'] for _, shard in listed)}"
        )
    return report


def check_balance(manifest: dict, report: VerifyReport) -> None:
    """`--balance-shards N`: each split's shards hold what its plan gives them (`balanced_ends`: equal shards, their
    number a multiple of N, less the records quarantined), so that N data-loader workers each read as much."""
    multiple, shard_size = manifest["settings"]["balance_shards"], manifest["settings"]["shard_size"]
    for split, entry in sorted(manifest["splits"].items()):
        ends = balanced_ends(entry["records"], multiple, shard_size)
        lost = [q["index"] for q in manifest.get("quarantine", []) if q["split"] == split]
        planned = [end - start - sum(start <= i < end for i in lost) for start, end in zip([0, *ends], ends)]
        planned = [n for n in planned if n]
        held = [shard["samples"] for shard in entry["shards"]]
        if held != planned:
            report.problems.append(
                f"{split}: its shards hold {held} samples, --balance-shards {multiple} plans "
                f"{planned} (equal shards, their number a multiple of {multiple}); export again "
                "with --overwrite"
            )
        elif held:
            report.notes.append(
                f"{split}: {len(held)} shard(s) of {min(held)} to {max(held)} samples, balanced for "
                f"{multiple} worker(s) (--balance-shards {multiple})"
            )


def verify_clip_benchmark(folder: Path, report: VerifyReport) -> VerifyReport:
    """Each split's shard set: `nshards.txt` names as many shards as there are (`0.tar` ...), each by the
    WebDataset rules."""
    report.format = "clip-benchmark"
    for count_file in sorted(folder.rglob("nshards.txt")):
        split = count_file.parent
        tars = sorted(split.glob("*.tar"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        try:
            listed = int(count_file.read_text().strip())
        except ValueError:
            report.problems.append(f"{count_file}: not a number of shards")
            continue
        if [p.name for p in tars] != [f"{i}.tar" for i in range(listed)]:
            report.problems.append(f"{split}: nshards.txt says {listed}, the folder holds {[p.name for p in tars]}")
        counts, problems = check_tar(tars)
        report.shards += len(tars)
        report.samples += sum(counts.values())
        report.problems += problems
    if not report.shards:
        report.problems.append(f"{folder}: a clip-benchmark export with no shards")
    return report
