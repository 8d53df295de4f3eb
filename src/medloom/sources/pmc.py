"""PubMed Central articles: every figure graphic becomes a record with its caption, citing sentences,
article metadata and exact licence.

Inputs, found anywhere under the source root: PMC OA packages (`.tar.gz`/`.tgz` holding an `.nxml` and
its figure files), `.nxml`/`.xml` files with their images beside them, Europe PMC files wrapping many
`<article>`s, and OAI-PMH responses with JATS in a default namespace.

The unit of accounting is the figure graphic: each one gives a record, or a quarantine row (a figure
with no graphic, an href that matches no file, an image that does not decode), or a `filtered` row when
the recipe's `licenses:` list leaves its licence out. Files that are not readable XML are one
quarantined input each.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import tarfile
import zlib
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from ..imaging import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, DecodeError, file_facts, read_file
from ..literature import jats
from ..literature.licenses import commercial_use, parse_allowed
from ..literature.mesh import load_mesh, mesh_files
from ..records import quarantine_row
from .base import Scan, fingerprint, image_record, make_task, walk_files

TASK = "figure captioning"  # the T of every record unless the recipe names one
PACKAGE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
XML_SUFFIXES = (".nxml", ".xml")
# tried in this order for hrefs without an extension (or with one the package does not have)
HREF_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".jp2")


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # keep only figures whose licence is listed: CC0, "CC BY", "CC BY-NC", ..., or the groups
    # `commercial` (allows commercial use) and `noncommercial` (any CC or public-domain licence)
    licenses: list[str] | None = None
    tables: bool = False  # tables rendered as images become records too (fig_kind = "table")
    # PubMed/MEDLINE XML files or folders (.xml, .xml.gz) whose MeSH terms are joined by PMID
    mesh_from: str | list[str] | None = None

    @field_validator("licenses")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            parse_allowed(v)
        return v


def _mesh_paths(source: dict, opts: Options) -> list[str]:
    if not opts.mesh_from:
        return []
    names = [opts.mesh_from] if isinstance(opts.mesh_from, str) else opts.mesh_from
    return mesh_files([n if os.path.isabs(n) else os.path.join(source["root"], n) for n in names])


def is_article_input(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(PACKAGE_SUFFIXES) or name.endswith(XML_SUFFIXES)


def scan(source: dict) -> Scan:
    opts = Options(**source["options"])
    mesh = _mesh_paths(source, opts)
    missing = [p for p in mesh if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"mesh_from: no such file(s): {', '.join(missing)}")
    mesh_fp = ",".join(fingerprint(p) for p in mesh)
    skip = {os.path.realpath(p) for p in mesh}
    out = Scan()
    for path in walk_files(source["root"], out, source):
        if is_article_input(path) and os.path.realpath(path) not in skip:
            out.tasks.append(make_task(source, str(path), fingerprint_extra=mesh_fp))
    return out


@lru_cache(maxsize=4)
def _mesh_index(root: str, mesh_from: str | tuple[str, ...]) -> dict[str, list[str]]:
    """Listed and fingerprinted once per worker process, not once per article."""
    paths = _mesh_paths({"root": root}, Options(mesh_from=mesh_from if isinstance(mesh_from, str) else list(mesh_from)))
    return load_mesh(tuple((p, fingerprint(p)) for p in paths))


@lru_cache(maxsize=8)
def folder_names(folder: str, mtime_ns: int) -> dict[str, str]:
    """Lower-cased file name -> file name in a folder; read once per process while the folder is unchanged
    (a flat folder of many articles and their images is listed once, not once per article)."""
    return {n.lower(): n for n in os.listdir(folder)}


# ---- files an href may name ---------------------------------------------------------------------------


def href_candidates(href: str) -> list[str]:
    """File names an href may mean: as written, with each image extension added (`pone.0046493.g001`,
    `ABI2008-897019.001`), and with its own extension swapped (a `.tif` href whose package has a `.jpg`)."""
    href = href.replace("\\", "/").split("/")[-1]
    names = [href] + [href + ext for ext in HREF_EXTENSIONS]
    stem, dot, ext = href.rpartition(".")
    if dot and "." + ext.lower() in IMAGE_EXTENSIONS:
        names += [stem + e for e in HREF_EXTENSIONS]
    return names


def resolve_href(href: str, names: dict[str, str]) -> str | None:
    """The file an href names among `names` (lower-cased basename -> real name), else None."""
    for name in href_candidates(href):
        found = names.get(name.lower())
        if found is not None and Path(found).suffix.lower() in IMAGE_EXTENSIONS:
            return found
    return None


def read_package(
    path: str, wanted: set[str] | None = None, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[list[tuple[str, bytes]], dict[str, bytes], dict[str, int]]:
    """(XML members, image members read, sizes of every image member) of a PMC OA package.

    Each member's size is checked against `max_bytes` before it is read (a small .tar.gz can unpack to
    gigabytes); only the image members in `wanted` are read (None: none). Members are regular files only:
    links and devices in a package are ignored, and nothing is ever extracted to disk.
    """
    xmls, images, sizes = [], {}, {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                lower = m.name.lower()
                if lower.endswith(XML_SUFFIXES) and not os.path.basename(lower).startswith("."):
                    if m.size > max_bytes:
                        raise DecodeError(
                            "over_budget",
                            f"{m.name} unpacks to {m.size} bytes, over the limit of "
                            f"{max_bytes}; raise `max_file_bytes` if it is genuine",
                        )
                    xmls.append((m.name, tar.extractfile(m).read()))
                elif Path(lower).suffix in IMAGE_EXTENSIONS:
                    sizes[m.name] = m.size
                    if wanted is not None and m.name in wanted and m.size <= max_bytes:
                        images[m.name] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DecodeError("package_unreadable", f"not a readable tar package: {e}") from None
    if not xmls and wanted is None:
        raise DecodeError("package_without_xml", "the package holds no .nxml/.xml article file")
    return sorted(xmls, key=lambda x: (not x[0].lower().endswith(".nxml"), x[0])), images, sizes


def _wanted_members(articles: list[dict], member_names: dict[str, str], allowed: set[str] | None) -> set[str]:
    """The package members the figures (that pass the licence filter) refer to: the only ones read."""
    found = set()
    for art in articles:
        for fig in art["figures"]:
            if allowed is not None and (fig["own_license"] or art)["license"] not in allowed:
                continue
            for href in fig["graphics"]:
                name = resolve_href(href, member_names)
                if name is not None:
                    found.add(name)
    return found


# ---- decode -------------------------------------------------------------------------------------------


def _article_fields(art: dict, fig: dict, panel: int, href: str, file: str, mesh: dict) -> dict:
    return {
        "pmcid": art["pmcid"],
        "pmid": art["pmid"],
        "doi": art["doi"],
        "title": art["title"],
        "abstracts": art["abstracts"],
        "journal": art["journal"],
        "publisher": art["publisher"],
        "year": art["year"],
        "keywords": art["keywords"],
        "subjects": art["subjects"],
        "mesh": mesh.get(art["pmid"], []),
        "article_type": art["article_type"],
        "fig_id": fig["fig_id"],
        "fig_label": fig["label"],
        "fig_kind": fig["kind"],
        "caption_title": fig["caption_title"],
        "graphic": href,
        "file": file,
        "panel": panel,
        "panels": len(fig["graphics"]),
        "where": fig["where"],
        "xref_count": fig["xref_count"],
        "contexts": fig["contexts"],
        "license_url": (fig["own_license"] or art)["license_url"],
        "license_source": "figure " + fig["own_license"]["license_source"] if fig["own_license"] else art["license_source"],
        "copyright": (fig["own_license"] or art)["copyright"],
    }


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", text).strip("_")


def decode(task: dict, source: dict) -> tuple[list[dict], list[dict], int]:
    """One article file or package -> a record per figure graphic, quarantine rows, graphics that gave records."""
    opts = Options(**source["options"])
    allowed = parse_allowed(opts.licenses) if opts.licenses is not None else None
    names = opts.mesh_from
    mesh = _mesh_index(source["root"], names if isinstance(names, str) else tuple(names)) if names else {}
    max_pixels = source.get("max_pixels") or DEFAULT_MAX_PIXELS
    name = source["name"]
    max_bytes = source.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES
    is_package = task["path"].lower().endswith(PACKAGE_SUFFIXES)
    sizes: dict[str, int] = {}
    if is_package:
        xmls, members, sizes = read_package(task["path"], None, max_bytes)
        member_names = {os.path.basename(m).lower(): m for m in sizes}
    else:
        xmls, members = [(os.path.basename(task["path"]), read_file(task["path"], max_bytes))], {}
        folder = os.path.dirname(task["path"])
        member_names = folder_names(folder, os.stat(folder).st_mtime_ns)
    records, problems, ok = [], [], 0

    def problem(reason: str, message: str, scope: str = "input", rid: str | None = None) -> None:
        problems.append(quarantine_row(name, task["uri"], reason, message, stage="decode", scope=scope, record_id=rid))

    xml_name, data = xmls[0]  # a package's .nxml first
    try:
        parsed = jats.extract(data, tables=opts.tables)
    except jats.UnreadableXML as e:
        raise DecodeError("xml_unreadable", f"{xml_name}: {e}") from None
    if parsed.recovered:
        problem(
            "xml_recovered",
            f"{xml_name}: malformed XML read by the recovering parser ({parsed.recovered}); check the figures of this article",
            scope="warning",
        )
    articles = parsed.articles
    if not articles:
        raise DecodeError("no_article", "the XML holds no <article> element")
    if is_package:  # second pass: only the members a figure refers to, each within the budget
        members = read_package(task["path"], _wanted_members(articles, member_names, allowed), max_bytes)[1]
    for a_index, art in enumerate(articles):
        base = task["id"] if len(articles) == 1 else f"{task['id']}/{_key(art['pmcid']) or a_index}"
        if not art["figures"]:
            problem("article_without_figures", f"{art['pmcid'] or art['doi'] or 'the article'} has no figures", scope="warning")
        for f_index, fig in enumerate(art["figures"]):
            fig_key = _key(fig["fig_id"]) or f"fig{f_index + 1}"
            what = f"{fig['kind']} {fig['fig_id'] or f_index + 1!s} ({fig['label'] or 'no label'})"
            if not fig["graphics"]:
                problem(
                    "figure_without_graphic", f"{what} has no <graphic>; nothing to turn into a record", rid=f"{base}/{fig_key}"
                )
                continue
            license = (fig["own_license"] or art)["license"]
            for panel, href in enumerate(fig["graphics"]):
                rid = f"{base}/{fig_key}" if len(fig["graphics"]) == 1 else f"{base}/{fig_key}/{panel}"
                if allowed is not None and license not in allowed:
                    problem(
                        "license",
                        f"{what}: licence {license!r} is not in the recipe's licenses {sorted(allowed)}",
                        scope="filtered",
                        rid=rid,
                    )
                    continue
                found = resolve_href(href, member_names)
                if found is None:
                    where = "the package" if is_package else f"{os.path.dirname(task['uri']) or '.'}/"
                    problem(
                        "graphic_not_found",
                        f"{what}: graphic href {href!r} matches no image file in {where} "
                        f"(tried {', '.join(href_candidates(href)[:4])}, ...)",
                        rid=rid,
                    )
                    continue
                try:
                    if is_package and found not in members:
                        raise DecodeError(
                            "over_budget",
                            f"unpacks to {sizes.get(found)} bytes, over the limit of "
                            f"{max_bytes}; raise `max_file_bytes` if it is genuine",
                        )
                    blob = io.BytesIO(members[found]) if is_package else os.path.join(folder, found)
                    facts = file_facts(
                        blob, max_pixels, damaged=source.get("damaged_images") or "quarantine", max_bytes=max_bytes
                    )
                except DecodeError as e:
                    problem(e.reason, f"{what}: {found}: {e}", rid=rid)
                    continue
                uri = task["uri"] if is_package else posixpath.join(posixpath.dirname(task["uri"]), found)
                rec = image_record(
                    {"id": rid},
                    facts,
                    uri=uri,
                    caption=fig["caption"],
                    license=license,
                    file_hash=facts.file_hash,
                    commercial_use=commercial_use(license),
                    article=_article_fields(art, fig, panel, href, found if is_package else "", mesh),
                )
                records.append({**rec, "task": TASK})
                ok += 1
    return records, problems, ok


def image_source(row: dict, path: str, cache: dict, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> str | io.BytesIO:
    """What to open for a record's pixels: the file itself, or its member of a package (read alone, within the
    budget; the last package's members are kept while records from it follow one another)."""
    member = (row.get("article") or {}).get("file") or ""
    if not member:
        return path
    if cache.get("package") != path:
        cache.clear()
        cache["package"], cache["members"] = path, {}
    if member not in cache["members"]:
        cache["members"].update(read_package(path, {member}, max_bytes)[1])
    data = cache["members"].get(member)
    if data is None:
        raise DecodeError(
            "changed_since_ingest",
            f"{member} is no longer in {os.path.basename(path)} (or is over the size limit): run `medloom ingest` again",
        )
    return io.BytesIO(data)
