"""What the web app and the report read from a loom: one table of records with their curation facts, facets,
pages of the grid, a record's full row, clusters, duplicate groups and texts to audit.

The table is rebuilt when a file it came from changes (the catalog's manifest, the curation and annotation
files), so a running ingest's results show once its manifest lists them. The user's WHERE box runs on an
in-memory copy whose connection may not touch files (DuckDB's `enable_external_access` is off and locked):
a filter can read the records, never the disk.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .. import catalog

PAGE = 60
FACETS = ("modality", "anatomy", "task", "source", "split", "license", "label", "concept", "cluster",
          "duplicate", "group", "text", "quarantine")
FACET_TITLES = {"modality": "Modality", "anatomy": "Anatomical area", "task": "Task", "source": "Source",
                "split": "Split", "license": "Licence", "label": "Label", "concept": "Concept",
                "cluster": "Cluster", "duplicate": "Duplicates", "group": "Duplicate group", "text": "Generated text",
                "quarantine": "Quarantine (part of the record dropped or warned)"}
WATCHED = ("catalog/manifest.json", "annotations/annotations.parquet", "curation/dedup.parquet",
           "curation/leakage.parquet", "curation/clusters.parquet", "curation/concepts.parquet",
           "splits/split.parquet")


class BadRequest(ValueError):
    """A request the app cannot answer as asked; the message says what was wrong (a 4xx answer)."""


class NotFound(LookupError):
    """No such record, cluster or group (a 404 answer)."""


@dataclass
class Query:
    """A grid selection: facet values (OR within a facet, AND across) and an SQL condition."""
    facets: dict[str, list[str]]
    where: str = ""
    page: int = 0

    @classmethod
    def from_params(cls, params) -> Query:
        facets = {}
        for name in FACETS:
            values = [v for v in params.getlist(name) if v != ""]
            if values:
                facets[name] = values
        where = (params.get("where") or "").strip()
        if ";" in where:
            raise BadRequest("the WHERE box takes one condition (no `;`)")
        if len(where) > 2000:
            raise BadRequest("the WHERE condition is longer than 2000 characters")
        try:
            page = int(params.get("page") or 0)
        except ValueError:
            raise BadRequest(f"page {params.get('page')!r} is not a number") from None
        if page < 0 or page > 10**7:
            raise BadRequest(f"page {page} is out of range")
        unknown = sorted(set(params.keys()) - set(FACETS) - {"where", "page", "token"})
        if unknown:
            raise BadRequest(f"unknown filter(s) {', '.join(unknown)}; facets are: {', '.join(FACETS)}")
        return cls(facets, where, page)

    def sql(self) -> tuple[str, list]:
        conditions, params = [], []
        for name, values in self.facets.items():
            marks = ", ".join("?" for _ in values)
            if name == "label":
                conditions.append(f"list_has_any(labels, [{marks}]::VARCHAR[])")
            else:
                conditions.append(f"coalesce(\"{name}\", '') IN ({marks})")
            params += values
        if self.where:
            conditions.append(f"({self.where})")
        return (" WHERE " + " AND ".join(conditions)) if conditions else "", params


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
    """The records with their split, cluster, concept, duplicate and generated-text state, one row each."""
    from ..export import ExportOptions, has_view, selection_sql

    joins, split, _, _ = selection_sql(loom, ExportOptions(include_duplicates=True))
    cols = ["records.* EXCLUDE (rois, render, article, meta)", f"{split} AS split",
            "coalesce(len(records.rois), 0) AS n_rois",
            "list_distinct([x.label FOR x IN coalesce(records.rois, [])]) AS roi_labels",
            "records.article.title AS article_title", "records.article.pmcid AS pmcid"]
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
        cols += ["CASE WHEN dd.id IS NULL THEN 'unique' WHEN dd.keep THEN 'kept' ELSE 'marked out' END AS duplicate",
                 "CAST(dd.\"group\" AS VARCHAR) AS \"group\""]
    else:
        cols += ["'not checked' AS duplicate", "NULL::VARCHAR AS \"group\""]
    # quarantine rows about a record that was kept: a box or label dropped, a warning
    joins += (" LEFT JOIN (SELECT record_id AS id, string_agg(DISTINCT reason, ', ' ORDER BY reason) AS quarantine "
              "FROM quarantine WHERE coalesce(record_id, '') <> '' GROUP BY record_id) AS qq USING (id)")
    cols.append("coalesce(qq.quarantine, '') AS quarantine")
    if has_view(con, "annotations"):
        joins += " LEFT JOIN annotations AS an USING (id)"
        reviewed = "len(an.reviews) > 0" if "reviews" in _columns(con, "annotations") else "false"
        cols += [f"CASE WHEN an.id IS NULL THEN 'none' WHEN {reviewed} THEN 'reviewed' "
                 "WHEN len(an.flags) > 0 THEN 'flagged' WHEN an.caption_source = 'llm' "
                 "OR len([q FOR q IN an.vqa IF q.source = 'llm']) > 0 THEN 'llm' "
                 "ELSE 'template' END AS text", "an.caption AS generated_caption"]
    else:
        cols += ["'none' AS text", "NULL::VARCHAR AS generated_caption"]
    return f"SELECT {', '.join(cols)} FROM records {joins}"


def facet_value(name: str) -> str:
    """The SQL giving a facet's value per record (a label facet: one row per label)."""
    return "unnest(labels)" if name == "label" else f"coalesce(CAST(\"{name}\" AS VARCHAR), '')"


def dicts(cur) -> list[dict]:
    """A DuckDB result as one dict per row."""
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]


def _columns(con, view: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}


class LoomIndex:
    """The loom as the app sees it; every method is safe to call from several threads."""

    def __init__(self, loom: Path):
        self.loom = Path(loom)
        self._lock = threading.RLock()
        self._stamp: tuple | None = None
        self._items = None
        self._catalog = None
        self._facet_cache: dict = {}
        self._sources: dict[str, dict] = {}
        self._vector_stamp: tuple | None = None
        self._vector_cache = None
        self.total = 0
        self.refresh()

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
            table = con.sql(items_sql(self.loom, con)).to_arrow_table()
            items = duckdb.connect()
            items.register("_items", table)
            items.execute("CREATE TABLE items AS SELECT * FROM _items ORDER BY id")
            items.unregister("_items")
            items.execute("SET enable_external_access = false")
            items.execute("SET lock_configuration = true")
            from ..export import render_sources

            self._sources = render_sources(catalog.read_manifest(self.loom))
            self._catalog, self._items, self._stamp = con, items, stamp
            self._facet_cache = {}
            self.total = table.num_rows

    def _run(self, sql: str, params: list | None = None, *, user: bool = False):
        """Rows of a query on the items table; a user's condition that DuckDB refuses is a BadRequest."""
        with self._lock:
            try:
                return self._items.execute(sql, params or []).fetchall()
            except duckdb.Error as e:
                if user:
                    raise BadRequest(f"the filter is not valid on the records: {str(e).splitlines()[0]}") from None
                raise

    def columns(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._items.execute("DESCRIBE items").fetchall()]

    def facets(self, query: Query, limit: int = 40) -> dict[str, list[tuple[str, int]]]:
        """Counts per value of every facet within the selection (cached per selection until a file changes)."""
        key = (tuple(sorted((k, tuple(v)) for k, v in query.facets.items())), query.where)
        if key in self._facet_cache:
            return self._facet_cache[key]
        where, params = query.sql()
        out = {}
        for name in FACETS:
            out[name] = [(str(v), int(n)) for v, n in self._run(
                f"SELECT {facet_value(name)} AS v, count(*) AS n FROM items{where} GROUP BY v ORDER BY n DESC, v "
                f"LIMIT {limit}", params, user=True)]
        if len(self._facet_cache) > 256:
            self._facet_cache.clear()
        self._facet_cache[key] = out
        return out

    def page(self, query: Query, size: int = PAGE) -> tuple[int, list[dict]]:
        """(records in the selection, the rows of the asked page)."""
        where, params = query.sql()
        total = self._run(f"SELECT count(*) FROM items{where}", params, user=True)[0][0]
        rows = self._run(f"SELECT id, source, split, modality, anatomy, task, labels, width, height, pixel_hash, "
                         f"n_rois, text, duplicate FROM items{where} ORDER BY id LIMIT {size} OFFSET {query.page * size}",
                         params, user=True)
        keys = ["id", "source", "split", "modality", "anatomy", "task", "labels", "width", "height", "pixel_hash",
                "n_rois", "text", "duplicate"]
        return total, [dict(zip(keys, r)) for r in rows]

    def counts(self, column: str) -> list[tuple[str, int]]:
        return [(str(v), int(n)) for v, n in self._run(
            f"SELECT {facet_value(column)} AS v, count(*) AS n FROM items GROUP BY v ORDER BY n DESC, v")]

    def mat_counts(self) -> list[tuple[str, str, str, int]]:
        return [tuple(r) for r in self._run("SELECT modality, anatomy, task, count(*) AS n FROM items "
                                            "GROUP BY ALL ORDER BY n DESC, modality, anatomy, task")]

    def quarantine(self, reason: str | None = None, limit: int = 500) -> tuple[list[tuple[str, int]], list[dict]]:
        with self._lock:
            con = self._catalog
            by_reason = [(str(r), int(n)) for r, n in con.execute(
                "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason ORDER BY n DESC, reason").fetchall()]
            cond, params = ("WHERE reason = ?", [reason]) if reason else ("", [])
            return by_reason, dicts(con.execute(f"SELECT source, path, record_id, stage, scope, reason, message FROM "
                                                f"quarantine {cond} ORDER BY source, path LIMIT {limit}", params))

    def record(self, record_id: str) -> dict:
        """The record's full catalog row, with its annotation, cluster, concept and duplicate rows."""
        with self._lock:
            con = self._catalog
            found = dicts(con.execute("SELECT * FROM records WHERE id = ?", [record_id]))
            if not found:
                raise NotFound(f"no record {record_id!r} in this loom")
            out = found[0]
            item = self._items.execute("SELECT split, cluster, concept FROM items WHERE id = ?", [record_id]).fetchone()
            out["_split"], out["_cluster"], out["_concept"] = item or (None,) * 3
            out["_annotation"] = self._one(con, "annotations", record_id)
            out["_dedup"] = self._one(con, "dedup", record_id)
            out["_concepts"] = self._one(con, "concepts", record_id)
            return out

    @staticmethod
    def _one(con, view: str, record_id: str) -> dict | None:
        from ..export import has_view

        if not has_view(con, view):
            return None
        found = dicts(con.execute(f"SELECT * FROM {view} WHERE id = ?", [record_id]))
        return found[0] if found else None

    def has_record(self, record_id: str, pixel_hash: str) -> bool:
        return bool(self._run("SELECT count(*) FROM items WHERE id = ? AND pixel_hash = ?", [record_id, pixel_hash])[0][0])

    def render_row(self, record_id: str) -> dict:
        """What the renderer needs of a record (looked up by id: the only way a request names a file)."""
        with self._lock:
            found = dicts(self._catalog.execute("SELECT id, source, uri, frame, width, height, pixel_hash, file_hash, "
                                                "render, rois FROM records WHERE id = ?", [record_id]))
            if not found:
                raise NotFound(f"no record {record_id!r} in this loom")
            return found[0]

    def sources(self) -> dict[str, dict]:
        """Per source what the renderer needs (read with the manifest, at the last rebuild)."""
        return self._sources

    # -- curation -------------------------------------------------------------------------------------------

    def clusters(self) -> list[tuple[str, int, str]]:
        """(cluster, records, concept) for every cluster, in cluster order."""
        return [(str(c), int(n), k or "") for c, n, k in self._run(
            "SELECT cluster, count(*) AS n, any_value(concept) FROM items WHERE cluster IS NOT NULL "
            "GROUP BY cluster ORDER BY CAST(cluster AS INTEGER)")]

    def cluster_members(self, cluster: str, limit: int = 48) -> list[dict]:
        """The records nearest the cluster's centre first (as on its contact sheet)."""
        with self._lock:
            con = self._catalog
            from ..export import has_view

            if not has_view(con, "clusters"):
                raise NotFound("no clusters in this loom: run `medloom embed` and `medloom cluster` first")
            try:
                number = int(cluster)
            except ValueError:
                raise BadRequest(f"cluster {cluster!r} is not a number") from None
            rows = dicts(con.execute("SELECT r.id, r.pixel_hash, r.modality, r.anatomy, r.labels FROM clusters c "
                                     "JOIN records r USING (id) WHERE c.cluster = ? ORDER BY c.distance, r.id "
                                     f"LIMIT {int(limit)}", [number]))
            if not rows:
                raise NotFound(f"no cluster {cluster} in this loom")
            return rows

    def cluster_previews(self, per_cluster: int = 6) -> dict[str, list[dict]]:
        """The records nearest each cluster's centre, for every cluster at once (one query, not one each)."""
        with self._lock:
            from ..export import has_view

            if not has_view(self._catalog, "clusters"):
                return {}
            out: dict[str, list[dict]] = {}
            for row in dicts(self._catalog.execute(
                    "SELECT CAST(c.cluster AS VARCHAR) AS cluster, c.id, r.pixel_hash FROM clusters c "
                    "JOIN records r USING (id) QUALIFY row_number() OVER (PARTITION BY c.cluster "
                    f"ORDER BY c.distance, c.id) <= {int(per_cluster)} ORDER BY c.cluster, c.distance, c.id")):
                out.setdefault(row["cluster"], []).append(row)
            return out

    def duplicate_groups(self, page: int = 0, size: int = 20) -> tuple[int, list[list[dict]]]:
        """Groups of duplicates (biggest first), each with its members' facts for a side-by-side view."""
        with self._lock:
            con = self._catalog
            from ..export import has_view

            if not has_view(con, "dedup"):
                return 0, []
            total = con.execute('SELECT count(DISTINCT "group") FROM dedup').fetchone()[0]
            extra = ", d.decided_by, d.decided_at" if "decided_by" in _columns(con, "dedup") else \
                ", NULL AS decided_by, NULL AS decided_at"
            cur = con.execute(
                'WITH g AS (SELECT "group", count(*) AS n FROM dedup GROUP BY "group" '
                f'ORDER BY n DESC, "group" LIMIT {int(size)} OFFSET {int(page) * int(size)}) '
                'SELECT d."group", d.id, d.keep, d.duplicate_of, d.reason' + extra + ', r.source, r.source_split, '
                'r.width, r.height, r.pixel_hash, r.modality, r.anatomy, r.labels '
                'FROM dedup d JOIN g USING ("group") JOIN records r USING (id) ORDER BY g.n DESC, d."group", d.id')
            groups: dict[int, list[dict]] = {}
            for row in dicts(cur):
                groups.setdefault(row["group"], []).append(row)
            return total, list(groups.values())

    def audit(self, state: str = "flagged", limit: int = 100) -> list[dict]:
        """Generated texts to review: those that failed a check, or that an LLM wrote (`state` llm)."""
        if state not in ("flagged", "llm", "reviewed"):
            raise BadRequest(f"audit shows flagged, llm or reviewed texts, not {state!r}")
        with self._lock:
            ids = [r[0] for r in self._items.execute(
                f"SELECT id FROM items WHERE text = ? ORDER BY id LIMIT {int(limit)}", [state]).fetchall()]
            if not ids:
                return []
            return dicts(self._catalog.execute("SELECT * FROM annotations WHERE id IN (SELECT unnest(?)) ORDER BY id",
                                               [ids]))

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
        hashes = dict(self._run("SELECT id, pixel_hash FROM items WHERE id IN (SELECT unnest(?))",
                                [[ids[i] for i in order]]))
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

