"""Runs inside pubmed_parser's own virtual environment (see pmc.py): times its three calls per article.

Usage: python pubmed_parser_worker.py ROUNDS FILE...   prints one JSON object on stdout.
"""

import io
import json
import sys
import time
from contextlib import redirect_stdout

import pubmed_parser as pp


def parse(path: str) -> list:
    """What a pipeline built on pubmed_parser calls per article; returns the figure ids it found."""
    pp.parse_pubmed_xml(path)
    captions = pp.parse_pubmed_caption(path) or []
    pp.parse_pubmed_paragraph(path)
    return [c["fig_id"] for c in captions]


def main() -> None:
    rounds, files = int(sys.argv[1]), sys.argv[2:]
    found, errors = {}, {}
    noise = io.StringIO()  # pubmed_parser prints on some inputs
    with redirect_stdout(noise):
        for path in files:  # once for the results (and warm caches)
            try:
                found[path] = parse(path)
            except Exception as e:  # a file it cannot read counts as no figures found
                errors[path] = f"{type(e).__name__}: {e}"
                found[path] = []
        start = time.perf_counter()
        for _ in range(rounds):
            for path in files:
                try:
                    parse(path)
                except Exception:
                    pass
        seconds = time.perf_counter() - start
    json.dump({"seconds": seconds, "articles": rounds * len(files), "found": found, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
