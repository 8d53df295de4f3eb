"""What the web app and the report read from a loom: one table of records with their curation facts, facets,
pages of the grid, a record's full row, clusters, duplicate groups and texts to audit.

The table is rebuilt when a file it came from changes (the catalog's manifest, the curation, annotation and
proposal files), so a running ingest's results show once its manifest lists them. The user's WHERE box is checked to
be one condition and runs in a child process (sandbox.py) on a copy whose connection may not touch files
(DuckDB's `enable_external_access` is off and locked), with a time and a memory budget: a filter can read the
records, never the disk, and a slow one cannot stall other pages. Reads go through a cursor of their own, so
requests do not wait for each other.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import duckdb
import numpy as np

from .. import catalog
from .query import FACETS, PAGE, BadRequest, NotFound, Query, facet_value
from .sandbox import FilterError, Sandbox

WATCHED = (
    "catalog/manifest.json",
    "annotations/annotations.parquet",
    "curation/dedup.parquet",
    "curation/leakage.parquet",
    "curation/clusters.parquet",
    "curation/concepts.parquet",
    "splits/split.parquet",
    "proposals/proposals.parquet",
    "proposals/decisions.json",  # an acceptance (gather rewrites proposals.parquet too)
)


def _stamp(loom: Path) -> tuple:
    out = []
    for rel in WATCHED:
        try:
            st = (loom / rel).stat()
            out.append((rel, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((rel, None, None))
    return tuple(out)


def items_sql(loom: Path, con) -> str:
    """The records with their split, cluster, concept, duplicate, generated-text and ROI-proposal state, one row
    each."""
    from ..view.proposals import state_join
    from ..view.selection import Selection, has_view, selection_sql

    joins, _, _, _ = selection_sql(loom, Selection(include_duplicates=True))
    # the split `medloom split` assigned, else the source's own, else none (as `medloom stats` says; exports
    # put those in train)
    split = "coalesce(assigned.split, nullif(source_split, ''), '')" if " AS assigned " in joins else "coalesce(source_split, '')"
    cols = [
        "records.* EXCLUDE (rois, render, article, meta)",
        f"{split} AS split",
        "coalesce(len(records.rois), 0) AS n_rois",
        "list_distinct([x.label FOR x IN coalesce(records.rois, [])]) AS roi_labels",
        "records.article.title AS article_title",
        "records.article.pmcid AS pmcid",
    ]
    if has_view(con, "clusters"):
        joins += " LEFT JOIN clusters AS cl USING (id)"
        cols.append("CAST(cl.cluster AS VARCHAR) AS cluster")
    else:
        cols.append("NULL::VARCHAR AS cluster")
    if has_view(con, "concepts"):
        joins += " LEFT JOIN concepts AS co USING (id)"
        cols.append("co.global_concept AS concept")
    else:
        cols.append("NULL::VARCHAR AS concept")
    if has_view(con, "dedup"):
        joins += " LEFT JOIN dedup AS dd USING (id)"
        cols += [
            "CASE WHEN dd.id IS NULL THEN 'unique' WHEN dd.keep THEN 'kept' ELSE 'marked out' END AS duplicate",
            'CAST(dd."group" AS VARCHAR) AS "group"',
        ]
    else:
        cols += ["'not checked' AS duplicate", 'NULL::VARCHAR AS "group"']
    # quarantine rows about a record that was kept: a box or label dropped, a warning
    joins += (
        " LEFT JOIN (SELECT record_id AS id, string_agg(DISTINCT reason, ', ' ORDER BY reason) AS quarantine "
        "FROM quarantine WHERE coalesce(record_id, '') <> '' GROUP BY record_id) AS qq USING (id)"
    )
    cols.append("coalesce(qq.quarantine, '') AS quarantine")
    if has_view(con, "annotations"):
        joins += " LEFT JOIN annotations AS an USING (id)"
        reviewed = "len(an.reviews) > 0" if "reviews" in _columns(con, "annotations") else "false"
        cols += [
            f"CASE WHEN an.id IS NULL THEN 'none' WHEN {reviewed} THEN 'reviewed' "
            "WHEN len(an.flags) > 0 THEN 'flagged' WHEN an.caption_source = 'llm' "
            "OR len([q FOR q IN an.vqa IF q.source = 'llm']) > 0 THEN 'llm' "
            "ELSE 'template' END AS text",
            "an.caption AS generated_caption",
        ]
    else:
        cols += ["'none' AS text", "NULL::VARCHAR AS generated_caption"]
    column, join = state_join(con)  # the proposals facet: accepted, not accepted or none
    cols.append(column.lstrip(", "))
    joins += join
    return f"SELECT {', '.join(cols)} FROM records {joins}"


def dicts(cur) -> list[dict]:
    """A DuckDB result as one dict per row."""
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]


def _columns(con, view: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}


class Snapshot:
    """One build of the items table: its connection, the Arrow table it came from (what the sandbox gets),
    its stamp. A request takes one and keeps it, so a rebuild mid-request cannot mix two builds."""

    def __init__(self, stamp: tuple, table, con):
        self.stamp, self.table, self.con = stamp, table, con

    def cursor(self):
        return self.con.cursor()


class LoomIndex:
    """The loom as the app sees it; every method is safe to call from several threads."""

    def __init__(self, loom: Path, *, filter_seconds: float = 10.0, filter_memory_mb: int = 1024):
        self.loom = Path(loom)
        self._lock = threading.RLock()
        self._stamp: tuple | None = None
        self._snap: Snapshot | None = None
        self._catalog = None
        self._facet_cache: dict = {}
        self._selections: dict = {}
        self._sources: dict[str, dict] = {}
        self._vector_stamp: tuple | None = None
        self._vector_cache = None
        self.sandbox = Sandbox(filter_seconds, filter_memory_mb)
        self.total = 0
        self.refresh()

    def close(self) -> None:
        """Stop the filters' processes (a filter in flight ends at once)."""
        self.sandbox.close()

    # -- reading ----------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Rebuild from the files the manifests name when any of them changed since the last look."""
        stamp = _stamp(self.loom)
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            con = catalog.connect(self.loom)
            table = con.sql(items_sql(self.loom, con)).to_arrow_table().sort_by("id")
            items = duckdb.connect()
            items.register("_items", table)
            items.execute("CREATE TABLE items AS SELECT * FROM _items")  # rowid = position in `table`
            items.unregister("_items")
            items.execute("SET enable_external_access = false")
            items.execute("SET lock_configuration = true")
            from ..view.render import render_sources

            self._sources = render_sources(catalog.read_manifest(self.loom))
            self._catalog, self._snap, self._stamp = con, Snapshot(stamp, table, items), stamp
            self._facet_cache, self._selections = {}, {}
            self.total = table.num_rows

    def _rows(self, sql: str, params: list | None = None) -> list[tuple]:
        """Rows of one of the app's own queries on the items table, on a cursor of its own."""
        cur = self._snap.cursor()
        try:
            return cur.execute(sql, params or []).fetchall()
        finally:
            cur.close()

    def selection(self, snap: Snapshot, where: str) -> np.ndarray:
        """The positions of the records the WHERE box keeps, found in the sandbox (kept per build)."""
        key = (snap.stamp, where)
        found = self._selections.get(key)
        if found is None:
            try:
                found = self.sandbox.select(where, snap.stamp, lambda: snap.table)
            except FilterError as e:
                raise BadRequest(str(e)) from None
            if len(self._selections) > 32:
                self._selections.clear()
            self._selections[key] = found
        return found

    def _cursor(self, snap: Snapshot, query: Query):
        """A cursor on the build with the WHERE box's selection as the table `sel`."""
        sel = self.selection(snap, query.where) if query.where else None
        cur = snap.cursor()
        if sel is not None:
            import pyarrow as pa

            cur.register("sel", pa.table({"r": sel}))
        return cur

    def columns(self) -> list[str]:
        return [r[0] for r in self._rows("DESCRIBE items")]

    def facets(self, query: Query, limit: int = 40) -> dict[str, list[tuple[str, int]]]:
        """Counts per value of every facet within the selection, but for the facet's own choice (so its other
        values stay there to add); cached per selection until a file changes."""
        snap = self._snap
        key = (snap.stamp, tuple(sorted((k, tuple(v)) for k, v in query.facets.items())), query.where)
        if key in self._facet_cache:
            return self._facet_cache[key]
        cur = self._cursor(snap, query)
        try:
            out = {}
            for name in FACETS:
                where, params = query.sql(skip=name)
                out[name] = [
                    (str(v), int(n))
                    for v, n in cur.execute(
                        f"SELECT {facet_value(name)} AS v, count(*) AS n FROM items{where} GROUP BY v "
                        f"ORDER BY n DESC, v LIMIT {limit}",
                        params,
                    ).fetchall()
                ]
        finally:
            cur.close()
        if len(self._facet_cache) > 256:
            self._facet_cache.clear()
        self._facet_cache[key] = out
        return out

    def page(self, query: Query, size: int = PAGE) -> tuple[int, list[dict]]:
        """(records in the selection, the rows of the asked page)."""
        cur = self._cursor(self._snap, query)
        try:
            where, params = query.sql()
            total = cur.execute(f"SELECT count(*) FROM items{where}", params).fetchall()[0][0]
            keys = [
                "id",
                "source",
                "split",
                "modality",
                "anatomy",
                "task",
                "labels",
                "width",
                "height",
                "pixel_hash",
                "n_rois",
                "text",
                "duplicate",
            ]
            rows = cur.execute(
                f"SELECT {', '.join(keys)} FROM items{where} ORDER BY id LIMIT {size} OFFSET {query.page * size}", params
            ).fetchall()
        finally:
            cur.close()
        return total, [dict(zip(keys, r)) for r in rows]

    def counts(self, column: str) -> list[tuple[str, int]]:
        return [
            (str(v), int(n))
            for v, n in self._rows(f"SELECT {facet_value(column)} AS v, count(*) AS n FROM items GROUP BY v ORDER BY n DESC, v")
        ]

    def mat_counts(self) -> list[tuple[str, str, str, int]]:
        return [
            tuple(r)
            for r in self._rows(
                "SELECT modality, anatomy, task, count(*) AS n FROM items GROUP BY ALL ORDER BY n DESC, modality, anatomy, task"
            )
        ]

    def quarantine(self, reason: str | None = None, limit: int = 500) -> tuple[list[tuple[str, int]], list[dict]]:
        with self._lock:
            con = self._catalog
            by_reason = [
                (str(r), int(n))
                for r, n in con.execute(
                    "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason ORDER BY n DESC, reason"
                ).fetchall()
            ]
            cond, params = ("WHERE reason = ?", [reason]) if reason else ("", [])
            # a record dropped whole keeps its id in the row, but has no page to link to
            return by_reason, dicts(
                con.execute(
                    "SELECT source, path, record_id, coalesce(record_id IN (SELECT id FROM records), false) AS has_record, "
                    f"stage, scope, reason, message FROM quarantine {cond} ORDER BY source, path LIMIT {limit}",
                    params,
                )
            )

    def record(self, record_id: str) -> dict:
        """The record's full catalog row, with its annotation, cluster, concept and duplicate rows."""
        with self._lock:
            con = self._catalog
            found = dicts(con.execute("SELECT * FROM records WHERE id = ?", [record_id]))
            if not found:
                raise NotFound(f"no record {record_id!r} in this loom")
            out = found[0]
            item = self._rows("SELECT split, cluster, concept FROM items WHERE id = ?", [record_id])
            out["_split"], out["_cluster"], out["_concept"] = item[0] if item else (None,) * 3
            out["_annotation"] = self._one(con, "annotations", record_id)
            out["_dedup"] = self._one(con, "dedup", record_id)
            out["_concepts"] = self._one(con, "concepts", record_id)
            return out

    @staticmethod
    def _one(con, view: str, record_id: str) -> dict | None:
        from ..view.selection import has_view

        if not has_view(con, view):
            return None
        found = dicts(con.execute(f"SELECT * FROM {view} WHERE id = ?", [record_id]))
        return found[0] if found else None

    def has_record(self, record_id: str, pixel_hash: str) -> bool:
        return bool(self._rows("SELECT count(*) FROM items WHERE id = ? AND pixel_hash = ?", [record_id, pixel_hash])[0][0])

    def proposals(self, record_id: str) -> list[dict]:
        """The ROIs methods proposed for the record, accepted or not (`medloom propose`), in a stable order."""
        from ..view.proposals import record_proposals

        with self._lock:
            return record_proposals(self._catalog, record_id)

    def render_row(self, record_id: str) -> dict:
        """What the renderer needs of a record (looked up by id: the only way a request names a file)."""
        with self._lock:
            found = dicts(
                self._catalog.execute(
                    "SELECT id, source, uri, frame, width, height, pixel_hash, file_hash, render, rois FROM records WHERE id = ?",
                    [record_id],
                )
            )
            if not found:
                raise NotFound(f"no record {record_id!r} in this loom")
            return found[0]

    def sources(self) -> dict[str, dict]:
        """Per source what the renderer needs (read with the manifest, at the last rebuild)."""
        return self._sources

    # -- curation -------------------------------------------------------------------------------------------

    def clusters(self) -> list[tuple[str, int, str]]:
        """(cluster, records, concept) for every cluster, in cluster order."""
        return [
            (str(c), int(n), k or "")
            for c, n, k in self._rows(
                "SELECT cluster, count(*) AS n, any_value(concept) FROM items WHERE cluster IS NOT NULL "
                "GROUP BY cluster ORDER BY CAST(cluster AS INTEGER)"
            )
        ]

    def cluster_concepts(self) -> dict[str, tuple[str, tuple[str, ...], str]]:
        """Per cluster the (global, local, panel) concepts its records carry now (from the last apply)."""
        with self._lock:
            from ..view.selection import has_view

            if not has_view(self._catalog, "concepts"):
                return {}
            return {
                str(c): (g or "", tuple(sorted(loc or [])), p or "")
                for c, g, loc, p in self._catalog.execute(
                    "SELECT cluster, any_value(global_concept), any_value(local_concepts), any_value(panel) FROM concepts "
                    "GROUP BY cluster"
                ).fetchall()
            }

    def cluster_members(self, cluster: str, limit: int = 48) -> list[dict]:
        """The records nearest the cluster's centre first (as on its contact sheet)."""
        with self._lock:
            con = self._catalog
            from ..view.selection import has_view

            if not has_view(con, "clusters"):
                raise NotFound("no clusters in this loom: run `medloom embed` and `medloom cluster` first")
            try:
                number = int(cluster)
            except ValueError:
                raise BadRequest(f"cluster {cluster!r} is not a number") from None
            rows = dicts(
                con.execute(
                    "SELECT r.id, r.pixel_hash, r.modality, r.anatomy, r.labels FROM clusters c "
                    "JOIN records r USING (id) WHERE c.cluster = ? ORDER BY c.distance, r.id "
                    f"LIMIT {int(limit)}",
                    [number],
                )
            )
            if not rows:
                raise NotFound(f"no cluster {cluster} in this loom")
            return rows

    def cluster_previews(self, per_cluster: int = 6) -> dict[str, list[dict]]:
        """The records nearest each cluster's centre, for every cluster at once (one query, not one each)."""
        with self._lock:
            from ..view.selection import has_view

            if not has_view(self._catalog, "clusters"):
                return {}
            out: dict[str, list[dict]] = {}
            for row in dicts(
                self._catalog.execute(
                    "SELECT CAST(c.cluster AS VARCHAR) AS cluster, c.id, r.pixel_hash FROM clusters c "
                    "JOIN records r USING (id) QUALIFY row_number() OVER (PARTITION BY c.cluster "
                    f"ORDER BY c.distance, c.id) <= {int(per_cluster)} ORDER BY c.cluster, c.distance, c.id"
                )
            ):
                out.setdefault(row["cluster"], []).append(row)
            return out

    def duplicate_groups(self, page: int = 0, size: int = 20) -> tuple[int, list[list[dict]]]:
        """Groups of duplicates (biggest first), each with its members' facts for a side-by-side view."""
        with self._lock:
            con = self._catalog
            from ..view.selection import has_view

            if not has_view(con, "dedup"):
                return 0, []
            total = con.execute('SELECT count(DISTINCT "group") FROM dedup').fetchone()[0]
            extra = (
                ", d.decided_by, d.decided_at"
                if "decided_by" in _columns(con, "dedup")
                else ", NULL AS decided_by, NULL AS decided_at"
            )
            cur = con.execute(
                'WITH g AS (SELECT "group", count(*) AS n FROM dedup GROUP BY "group" '
                f'ORDER BY n DESC, "group" LIMIT {int(size)} OFFSET {int(page) * int(size)}) '
                'SELECT d."group", d.id, d.keep, d.duplicate_of, d.reason' + extra + ", r.source, r.source_split, "
                "r.width, r.height, r.pixel_hash, r.modality, r.anatomy, r.labels "
                'FROM dedup d JOIN g USING ("group") JOIN records r USING (id) ORDER BY g.n DESC, d."group", d.id'
            )
            groups: dict[int, list[dict]] = {}
            for row in dicts(cur):
                groups.setdefault(row["group"], []).append(row)
            return total, list(groups.values())

    def audit(self, state: str = "flagged", page: int = 0, size: int = 20) -> tuple[int, list[dict]]:
        """(records in the queue, the annotation rows of the page): a record is in the flagged or llm queue
        while one of its texts there has no verdict, in reviewed while it has one."""
        from .audit import CANDIDATES, in_queue

        if state not in CANDIDATES:
            raise BadRequest(f"audit shows flagged, llm or reviewed texts, not {state!r}")
        with self._lock:
            from ..view.selection import has_view

            con = self._catalog
            if not has_view(con, "annotations"):
                return 0, []
            key = ("audit", self._stamp, state)
            ids = self._facet_cache.get(key)
            if ids is None:
                columns = _columns(con, "annotations")
                if "reviews" not in columns and state == "reviewed":
                    return 0, []
                wanted = [
                    c
                    for c in (
                        "id",
                        "caption",
                        "caption_source",
                        "template_caption",
                        "roi_text",
                        "vqa",
                        "flags",
                        "reviews",
                        "llm_failed",
                    )
                    if c in columns
                ]
                ids = [
                    a["id"]
                    for a in dicts(
                        con.execute(f"SELECT {', '.join(wanted)} FROM annotations WHERE {CANDIDATES[state]} ORDER BY id")
                    )
                    if in_queue(a, state)
                ]
                self._facet_cache[key] = ids
            chosen = ids[page * size : (page + 1) * size]
            if not chosen:
                return len(ids), []
            return len(ids), dicts(con.execute("SELECT * FROM annotations WHERE id IN (SELECT unnest(?)) ORDER BY id", [chosen]))

    def neighbours(self, record_id: str, k: int = 12) -> list[tuple[str, float, str]]:
        """(id, cosine similarity, pixel hash) of the records nearest by `medloom embed`'s vectors."""
        import numpy as np

        vectors = self._vectors()
        if vectors is None:
            raise NotFound("no embeddings in this loom: run `medloom embed LOOM` first")
        ids, matrix, where = vectors
        if record_id not in where:
            raise NotFound(f"record {record_id!r} has no embedding yet (run `medloom embed` again)")
        sims = matrix @ matrix[where[record_id]]
        order = np.argsort(-sims)[: k + 1]
        hashes = dict(self._rows("SELECT id, pixel_hash FROM items WHERE id IN (SELECT unnest(?))", [[ids[i] for i in order]]))
        return [(ids[i], float(sims[i]), hashes.get(ids[i], "")) for i in order if ids[i] != record_id][:k]

    def _vectors(self):
        import numpy as np

        from ..curate.embed import read_embeddings

        with self._lock:
            if self._vector_stamp != self._stamp:
                ids, vectors = read_embeddings(self.loom)
                if vectors is None:
                    self._vector_cache = None
                else:
                    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                    self._vector_cache = (ids, vectors.astype(np.float32), {r: i for i, r in enumerate(ids)})
                self._vector_stamp = self._stamp
            return self._vector_cache


def meta_facts(row: dict) -> dict:
    """The reader's facts (a JSON object in the catalog) as a dict, empty when absent or unreadable."""
    try:
        return json.loads(row.get("meta") or "{}")
    except json.JSONDecodeError:
        return {}
