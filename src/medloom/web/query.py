"""The grid's query: its facets, the page asked for, and the WHERE box's one condition, checked before it runs;
and the errors a request can cause (a 400 or a 404 answer)."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

PAGE = 60
MAX_PAGE = 10**6
FACETS = (
    "modality",
    "anatomy",
    "task",
    "source",
    "split",
    "license",
    "label",
    "concept",
    "cluster",
    "duplicate",
    "group",
    "text",
    "proposals",
    "quarantine",
)
FACET_TITLES = {
    "modality": "Modality",
    "anatomy": "Anatomical area",
    "task": "Task",
    "source": "Source",
    "split": "Split",
    "license": "Licence",
    "label": "Label",
    "concept": "Concept",
    "cluster": "Cluster",
    "duplicate": "Duplicates",
    "group": "Duplicate group",
    "text": "Generated text",
    "proposals": "Machine ROI proposals",
    "quarantine": "Quarantine (part of the record dropped or warned)",
}


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
        where = check_condition((params.get("where") or "").strip())
        page = page_number(params.get("page"))
        unknown = sorted(set(params.keys()) - set(FACETS) - {"where", "page", "token"})
        if unknown:
            raise BadRequest(f"unknown filter(s) {', '.join(unknown)}; facets are: {', '.join(FACETS)}")
        return cls(facets, where, page)

    def sql(self, skip: str | None = None) -> tuple[str, list]:
        """The facets' conditions (all but `skip`'s: a facet's own counts show its other values, to OR them),
        and the WHERE box's as the positions the sandbox found (the table `sel`)."""
        conditions, params = [], []
        for name, values in self.facets.items():
            if name == skip:
                continue
            marks = ", ".join("?" for _ in values)
            if name == "label":
                conditions.append(f"list_has_any(labels, [{marks}]::VARCHAR[])")
            else:
                conditions.append(f"coalesce(\"{name}\", '') IN ({marks})")
            params += values
        if self.where:
            conditions.append("rowid IN (SELECT r FROM sel)")
        return (" WHERE " + " AND ".join(conditions)) if conditions else "", params


def page_number(value) -> int:
    """A `?page=` value: a whole number from 0 to MAX_PAGE."""
    try:
        page = int(value or 0)
    except (TypeError, ValueError):
        raise BadRequest(f"page {value!r} is not a number") from None
    if page < 0 or page > MAX_PAGE:
        raise BadRequest(f"page {page} is out of range (0 to {MAX_PAGE})")
    return page


def check_condition(where: str) -> str:
    """The WHERE box's text if it is one condition: no comment, no `;`, every parenthesis closed where it was
    opened (outside string literals, as DuckDB's own tokenizer reads them), and one SELECT when wrapped as
    `WHERE (...)`. Otherwise `x) OR (true) --` could close the wrapping parenthesis and comment the rest out."""
    if not where:
        return ""
    if len(where) > 2000:
        raise BadRequest("the WHERE condition is longer than 2000 characters")
    one = "the WHERE box takes one condition"
    tokens = duckdb.tokenize(where)
    depth = 0
    for i, (start, kind) in enumerate(tokens):
        if kind == duckdb.token_type.comment:
            raise BadRequest(f"{one}, without comments (`--`, `/* */`)")
        if kind != duckdb.token_type.operator:
            continue
        for ch in where[start : tokens[i + 1][0] if i + 1 < len(tokens) else len(where)]:
            if ch == ";":
                raise BadRequest(f"{one} (no `;`)")
            depth += (ch == "(") - (ch == ")")
            if depth < 0:
                raise BadRequest(f"{one}: a `)` closes a parenthesis the condition did not open")
    if depth:
        raise BadRequest(f"{one}: {depth} parenthesis(es) left open")
    try:
        statements = duckdb.extract_statements(f"SELECT 1 FROM items WHERE ({where})")
    except duckdb.Error as e:
        raise BadRequest(f"the filter is not valid on the records: {str(e).splitlines()[0]}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise BadRequest(f"{one}")
    return where


def facet_value(name: str) -> str:
    """The SQL giving a facet's value per record (a label facet: one row per label)."""
    return "unnest(labels)" if name == "label" else f"coalesce(CAST(\"{name}\" AS VARCHAR), '')"
