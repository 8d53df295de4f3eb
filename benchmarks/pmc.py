"""Article extraction speed and figure recall: medloom's JATS extractor against pubmed_parser.

Both read the same real articles (../shared/fixtures/jats, 21 files from many publishers) ROUNDS times in
one process, in three interleaved passes (best of 3 each). pubmed_parser gets the three calls a
figure/caption pipeline needs (`parse_pubmed_xml`, `parse_pubmed_caption`, `parse_pubmed_paragraph`);
medloom's one `extract` call returns metadata, licence, figures, reference counts and citing sentences.
pubmed_parser runs in its own virtual environment (benchmarks/.venv-pubmed-parser, created on first use)
because it installs top-level `tests` and `data` packages. Recall: the share of the figures listed in
expected.json that each one returns (by figure id). Where pubmed_parser raises on a file, it found no
figures there, and its time on that file is the time it took to fail.

Usage: python benchmarks/pmc.py [--rounds 10] [--fixtures ../shared/fixtures/jats]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-pubmed-parser"
PUBMED_PARSER = "pubmed_parser==0.5.1"


def pubmed_parser_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with {PUBMED_PARSER} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", PUBMED_PARSER], check=True)
    return python


def recall(found: dict[str, list[str]], expected: list[dict], root: Path) -> float:
    want = got = 0
    for entry in expected:
        ids = {f["id"] for a in entry["articles"] for f in a["figs"]}
        want += len(ids)
        got += len(ids & set(found.get(str(root / entry["file"]), [])))
    return got / want if want else 1.0


def run_medloom(files: list[Path], rounds: int) -> tuple[float, dict[str, list[str]]]:
    from medloom.literature.jats import extract

    found = {str(p): [f["fig_id"] for a in extract(p.read_bytes()).articles for f in a["figures"]] for p in files}
    start = time.perf_counter()
    for _ in range(rounds):
        for p in files:
            extract(p.read_bytes())
    return time.perf_counter() - start, found


def run_pubmed_parser(files: list[Path], rounds: int) -> dict:
    proc = subprocess.run(
        [str(pubmed_parser_python()), str(HERE / "pubmed_parser_worker.py"), str(rounds), *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--fixtures", type=Path, default=HERE.parent.parent / "shared" / "fixtures" / "jats")
    args = ap.parse_args()
    expected = json.loads((args.fixtures / "expected.json").read_text())
    files = [args.fixtures / e["file"] for e in expected]
    articles = args.rounds * len(files)

    seconds, base = float("inf"), {"seconds": float("inf")}
    for _ in range(3):  # interleaved passes, best of 3 each: this machine's speed drifts
        run, found = run_medloom(files, args.rounds)
        seconds = min(seconds, run)
        other = run_pubmed_parser(files, args.rounds)
        base = other if other["seconds"] < base["seconds"] else base

    ours, theirs = articles / seconds, base["articles"] / base["seconds"]
    print(f"{len(files)} articles x {args.rounds} rounds, one process each")
    print(f"{'':16}{'articles/s':>12}{'figure recall':>15}")
    print(f"{'pubmed_parser':16}{theirs:12.1f}{recall(base['found'], expected, args.fixtures):15.3f}")
    print(f"{'medloom':16}{ours:12.1f}{recall(found, expected, args.fixtures):15.3f}")
    print(f"ratio medloom / pubmed_parser: {ours / theirs:.2f}x")
    for path, error in base["errors"].items():
        print(f"  pubmed_parser failed on {Path(path).name}: {error[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
