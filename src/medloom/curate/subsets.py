"""Named subsets of a loom: records kept by concept and balanced (at most N per concept), saved as
`LOOM/subsets/NAME.parquet` (their ids) with `NAME.json` (how they were chosen); `export --subset NAME`
exports only them."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa

from .. import catalog
from ..errors import SubsetError
from ..locks import writer
from ..outputs import write_file, write_parquet
from ..view.selection import subset_path

SUBSETS = "subsets"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@writer
def make_subset(
    loom: Path, name: str, *, concepts: list[str] | None = None, cap: int | None = None, seed: int = 0, where: str | None = None
) -> dict:
    """Keep records whose global or a local concept is listed (all, without `concepts`), then at most `cap`
    per global concept, chosen by a seeded hash of the id (the same records for the same seed)."""
    loom = Path(loom)
    path = subset_path(loom, name)
    con = catalog.connect(loom)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    if (concepts or cap) and "concepts" not in views:
        raise SubsetError(f"{loom}: no concepts yet; run `medloom cluster` and `medloom concepts --apply` first")
    join = "LEFT JOIN concepts c USING (id)" if "concepts" in views else ""
    concept = "coalesce(c.global_concept, 'unlabelled')" if join else "'unlabelled'"
    conditions = [f"({where})"] if where else []
    if concepts:
        listed = ", ".join("'" + c.replace("'", "''") + "'" for c in concepts)
        conditions.append(f"({concept} IN ({listed}) OR len(list_intersect(c.local_concepts, [{listed}])) > 0)")
    rank = f"row_number() OVER (PARTITION BY {concept} ORDER BY md5('{int(seed)}:' || r.id))"
    query = f"SELECT r.id, {concept} AS concept, {rank} AS rank FROM records r {join}" + (
        f" WHERE {' AND '.join(conditions)}" if conditions else ""
    )
    rows = con.execute(
        f"SELECT id, concept FROM ({query}) WHERE {'rank <= ' + str(int(cap)) if cap else 'true'} ORDER BY id"
    ).fetchall()
    table = pa.table({"id": [r[0] for r in rows], "concept": [r[1] for r in rows]})
    write_parquet(path, table)
    counts: dict[str, int] = {}
    for _, c in rows:
        counts[c] = counts.get(c, 0) + 1
    info = {
        "name": name,
        "concepts": concepts,
        "cap": cap,
        "seed": seed,
        "where": where,
        "records": len(rows),
        "per_concept": dict(sorted(counts.items())),
        "ids_sha256": hashlib.sha256("\n".join(r[0] for r in rows).encode()).hexdigest(),
    }
    write_file(path.with_suffix(".json"), json.dumps(info, indent=1).encode())
    return info
