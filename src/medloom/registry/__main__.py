"""`python -m medloom.registry [check|refresh]`: after a vocabulary change, list the registry's stale normalised
terms (check) or rewrite them (refresh, in the source tree of an editable install)."""

from __future__ import annotations

import sys

from . import drift, refresh


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "check"
    if what == "refresh":
        print(f"rewrote {refresh()}")
        return 0
    if what == "check":
        lines = drift()
        print("\n".join(lines) if lines else "the registry's normalised terms are what the vocabulary says")
        return 1 if lines else 0
    print("usage: python -m medloom.registry [check|refresh]", file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
