"""JATS / PMC nXML articles to plain data: article metadata, licence, and every figure with its caption,
graphics, in-text reference count and citing sentences.

One parse per file and one pass per article: the figure list, the xref counts and the citing sentences
all come from the same tree, which is what makes this several times faster than parsers that re-read
the file once per question. Malformed XML is re-read with lxml's recovering parser and says so.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from lxml import etree

from .licenses import commercial_use, normalise_license

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
# elements whose text starts and ends a word (so that "<title>A</title><p>B</p>" reads "A B")
BLOCK = frozenset(
    {
        "p",
        "title",
        "label",
        "caption",
        "sec",
        "list",
        "list-item",
        "def-item",
        "term",
        "def",
        "disp-quote",
        "td",
        "th",
        "tr",
        "abstract",
        "boxed-text",
        "fig",
        "table-wrap",
        "break",
    }
)
SKIP = frozenset({"tex-math", "object-id", "graphic", "media"})  # text that is not prose
# ancestors named in a figure's `where` (the part of the article that holds it)
CONTAINERS = frozenset(
    {"sub-article", "response", "body", "back", "floats-group", "floats-wrap", "app-group", "app", "boxed-text", "fig-group"}
)
NOT_FIGURE_GRAPHIC = frozenset({"disp-formula", "inline-formula", "caption", "table-wrap", "chem-struct-wrap"})
CONTEXT_BLOCKS = frozenset({"p", "td", "th", "title", "def", "list-item"})
# pub-date types that are not the article's first publication
LATE_DATES = frozenset({"pmc-release", "update", "corrected", "retracted", "nihms-submitted", "accepted", "received"})
_ABBREVIATIONS = frozenset(
    {
        "fig",
        "figs",
        "ref",
        "refs",
        "al",
        "e.g",
        "i.e",
        "vs",
        "cf",
        "approx",
        "eq",
        "eqs",
        "no",
        "nos",
        "dr",
        "mr",
        "mrs",
        "st",
        "suppl",
        "supp",
        "ca",
        "resp",
        "sp",
        "spp",
        "var",
        "vol",
    }
)
_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+(?=[A-Z])")
SPECIAL = tuple(BLOCK | SKIP)
MARK = "\ue000"  # a private-use character: never in real text
# floating objects that may sit inside a paragraph but are not its prose
FLOATS = (
    "fig",
    "fig-group",
    "table-wrap",
    "table-wrap-group",
    "boxed-text",
    "supplementary-material",
    "disp-formula",
    "chem-struct-wrap",
)


@dataclass
class Parsed:
    """A parsed file: its articles, and a message when the XML had to be recovered."""

    articles: list[dict] = field(default_factory=list)
    recovered: str | None = None


class UnreadableXML(ValueError):
    """Not XML that even the recovering parser can read."""


def norm(text: str) -> str:
    return " ".join(text.split())


# what a reference list never holds (figures, or the edges of the article's parts); a list that seems to,
# say because "<ref-list" sits in a comment and the count went wrong, is left alone
_NOT_IN_REFERENCES = (b"<fig", b"<graphic", b"<sub-article", b"<body", b"</back>")


def drop_reference_lists(data: bytes) -> bytes:
    """The article without its `<ref-list>`s, which hold no figures and are about a third of a typical
    PMC article: parsing them is the largest cost we can avoid. Found with plain byte searches (nested
    lists counted), so this costs a small fraction of the parse it saves."""
    pieces, last = [], 0
    start = data.find(b"<ref-list")
    while start >= 0:
        depth, i = 1, start + 9
        while depth:
            closing = data.find(b"</ref-list>", i)
            if closing < 0:
                break
            opening = data.find(b"<ref-list", i, closing)
            if opening >= 0:
                empty = data[opening + 9 : opening + 11] == b"/>"  # <ref-list/> opens nothing
                depth, i = depth + (not empty), opening + 9
            else:
                depth, i = depth - 1, closing + 11
        if depth:
            break
        if data[start + 9 : start + 11] != b"/>" and not any(data.find(s, start, i) >= 0 for s in _NOT_IN_REFERENCES):
            pieces.append(data[last:start])
            last = i
        start = data.find(b"<ref-list", i)
    return b"".join(pieces) + data[last:] if pieces else data


def _parser(recover: bool) -> etree.XMLParser:
    return etree.XMLParser(
        recover=recover, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True
    )  # comments and PIs are never read as text: no cost removing them


def parse_xml(data: bytes) -> tuple[etree._Element, str | None]:
    """The root element, and the parser's complaint when the file needed recovering."""
    try:
        return etree.fromstring(data, _parser(False)), None
    except etree.XMLSyntaxError as strict:
        try:
            root = etree.fromstring(data, _parser(True))
        except etree.XMLSyntaxError as e:
            raise UnreadableXML(f"not readable XML even with recovery: {e}") from None
        if root is None:
            raise UnreadableXML(f"not readable XML even with recovery: {strict}") from None
        return root, str(strict)


def _strip_namespaces(root: etree._Element) -> None:
    """JATS in a default namespace (OAI-PMH responses) reads like plain JATS once element tags are local."""
    for el in root.iter():
        tag = el.tag
        if isinstance(tag, str) and tag[0] == "{":
            el.tag = tag.split("}", 1)[1]
    etree.cleanup_namespaces(root)


def find_articles(root: etree._Element) -> list[etree._Element]:
    """`<article>` roots: the root itself, or every article in an `<articles>` or OAI-PMH wrapper."""
    if isinstance(root.tag, str) and root.tag[0] == "{" or (root.tag != "article" and root.find(".//article") is None):
        _strip_namespaces(root)
    if root.tag == "article":
        return [root]
    return list(root.iter("article"))


# ---- text ---------------------------------------------------------------------------------------------


def _walk_set(el: etree._Element, specials: list) -> set:
    """The descendants of el that hold a special element (a block, a skipped one): only these are walked
    in Python; every other subtree is joined by lxml in C."""
    need: set = set()
    for d in specials:
        for a in d.iterancestors():
            if a is el or a in need:
                break
            need.add(a)
    return need


def _collect(el: etree._Element, out: list[str], need: set) -> None:
    """Append el's prose to out, spacing block elements; only subtrees in `need` are walked in Python."""
    if el.text:
        out.append(el.text)
    for child in el:
        tag = child.tag
        if isinstance(tag, str) and tag not in SKIP:
            block = tag in BLOCK
            if block:
                out.append(" ")
            if child in need:
                _collect(child, out, need)
            else:
                out.extend(child.itertext())
            if block:
                out.append(" ")
        if child.tail:
            out.append(child.tail)


def text_of(el: etree._Element | None) -> str:
    if el is None:
        return ""
    specials = list(el.iterdescendants(*SPECIAL))
    if not specials:  # inline markup only: lxml joins it in C
        return norm("".join(el.itertext()))
    out: list[str] = []
    _collect(el, out, _walk_set(el, specials))
    return norm("".join(out))


def sentence_bounds(text: str) -> list[int]:
    """Start offsets of sentences ("Fig. 2", "et al." and initials do not end one)."""
    starts = [0]
    for m in _BOUNDARY.finditer(text):
        before = text[max(0, m.start() - 24) : m.start()].rsplit(None, 1)
        word = before[-1].lower().lstrip("([") if before else ""
        if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
            continue
        starts.append(m.end())
    return starts


# ---- metadata -----------------------------------------------------------------------------------------


def _ids(meta: etree._Element | None) -> dict[str, str]:
    ids: dict[str, str] = {}
    if meta is None:
        return ids
    for el in meta.iterchildren("article-id"):
        kind = (el.get("pub-id-type") or "").lower()
        value = norm(el.text or "")
        if value and kind not in ids:
            ids[kind] = value
    pmc = ids.get("pmcid") or ids.get("pmc")
    if pmc:
        digits = re.sub(r"\D", "", pmc)
        ids["pmcid"] = f"PMC{digits}" if digits else pmc
    return ids


def _year(meta: etree._Element | None) -> int | None:
    years = []
    for d in meta.iterchildren("pub-date") if meta is not None else ():
        kind = (d.get("pub-type") or d.get("date-type") or "").lower()
        y = d.findtext("year")
        if y and y.strip().isdigit() and kind not in LATE_DATES:
            years.append(int(y.strip()))
    return min(years) if years else None


def permissions_license(perm: etree._Element | None) -> dict:
    """Licence facts from a `<permissions>` element (article or figure)."""
    if perm is None:
        return {"license": "unknown", "license_source": "none", "license_url": "", "copyright": ""}
    lic = perm.find("license")
    urls, ltype, prose = [], None, ""
    if lic is not None:
        urls = [u for u in [lic.get(XLINK_HREF) or lic.get("href") or lic.get("xlink:href")] if u]
        urls += [norm(r.text or "") for r in lic.iter("{*}license_ref", "license_ref") if r.text]
        urls += [u for u in (x.get(XLINK_HREF) for x in lic.iter("ext-link", "uri")) if u]
        ltype = lic.get("license-type")
        prose = text_of(lic)
    for r in perm.iterchildren("{*}license_ref", "license_ref"):
        if r.text:
            urls.append(norm(r.text))
    copyright = text_of(perm.find("copyright-statement"))
    name, source = normalise_license(
        urls=urls, license_type=ltype, prose=prose, copyright_statement=copyright, present=lic is not None
    )
    return {"license": name, "license_source": source, "license_url": urls[0] if urls else "", "copyright": copyright}


def article_metadata(article: etree._Element) -> dict:
    front = article.find("front")
    meta = front.find("article-meta") if front is not None else None
    journal = front.find("journal-meta") if front is not None else None
    ids = _ids(meta)

    def texts(path: str) -> list[str]:
        return [t for t in (text_of(e) for e in meta.iterfind(path)) if t] if meta is not None else []

    journal_title = ""
    if journal is not None:
        jt = journal.find("journal-title-group/journal-title")
        journal_title = text_of(jt if jt is not None else journal.find("journal-title"))
    titles = texts("title-group/article-title")
    out = {
        "pmcid": ids.get("pmcid", ""),
        "pmid": ids.get("pmid", ""),
        "doi": ids.get("doi", ""),
        "publisher_id": ids.get("publisher-id", ""),
        "title": titles[0] if titles else "",
        "abstracts": texts("abstract") + texts("trans-abstract"),
        "journal": journal_title,
        "publisher": text_of(journal.find("publisher/publisher-name")) if journal is not None else "",
        "year": _year(meta),
        "keywords": texts("kwd-group/kwd"),
        "subjects": texts("article-categories//subject"),
        "article_type": article.get("article-type") or "",
    }
    out.update(permissions_license(meta.find("permissions") if meta is not None else None))
    if meta is not None and out["license"] == "unknown":  # older DTDs: copyright-statement beside permissions
        old = text_of(meta.find("copyright-statement"))
        if old:
            name, source = normalise_license(copyright_statement=old)
            out.update(license=name, license_source=source, copyright=old)
    out["commercial_use"] = commercial_use(out["license"])
    return out


# ---- figures ------------------------------------------------------------------------------------------


def _where(el: etree._Element, article: etree._Element) -> str:
    parts = []
    for anc in el.iterancestors():
        if anc is article:
            break
        if anc.tag in CONTAINERS:
            parts.append(anc.tag)
    return "/".join(reversed(parts))


def graphics(fig: etree._Element) -> list[str]:
    """The hrefs of a figure's own images, one per panel: not equations, not captions, and one per
    `<alternatives>` (the same image in several formats)."""
    hrefs, seen_alternatives = [], set()
    for g in fig.iter("graphic"):
        href = g.get(XLINK_HREF) or g.get("href") or g.get("xlink:href")
        skip, alternatives = False, None
        for anc in g.iterancestors():
            if anc is fig:
                break
            if anc.tag in NOT_FIGURE_GRAPHIC or anc.tag == "fig":
                skip = True
                break
            if anc.tag == "alternatives" and alternatives is None:
                alternatives = anc
        if skip or not href:
            continue
        if alternatives is not None:
            if alternatives in seen_alternatives:
                continue
            seen_alternatives.add(alternatives)
        hrefs.append(href.strip())
    return hrefs


def _xrefs(article: etree._Element, ref_types: frozenset[str]) -> Iterator[tuple[etree._Element, list[str]]]:
    for x in article.iter("xref"):
        if x.get("ref-type") in ref_types:
            rids = (x.get("rid") or "").split()
            if rids:
                yield x, rids


def _context_block(x: etree._Element) -> etree._Element | None:
    for anc in x.iterancestors():
        if anc.tag in CONTEXT_BLOCKS:
            return anc
    return None


def _without_floats(block: etree._Element) -> list[tuple[etree._Element, etree._Element]]:
    """Swap the figures, tables and boxes inside a paragraph for empty stand-ins (their tail text kept), so
    the paragraph's own prose is read without walking a whole table; returns the swaps to undo."""
    swaps: list[tuple[etree._Element, etree._Element]] = []
    chosen: set = set()
    for f in block.iterdescendants(*FLOATS):
        if any(a in chosen for a in f.iterancestors() if a is not block):
            continue
        chosen.add(f)
        stand_in = etree.Element("float-stand-in")
        stand_in.tail = f.tail
        f.getparent().replace(f, stand_in)
        swaps.append((f, stand_in))
    return swaps


def _text_with_marks(block: etree._Element, xrefs: list[etree._Element]) -> tuple[str, list[int | None]]:
    """The block's prose and where each xref (in document order) starts in it.

    A private-use mark goes in front of each xref for the duration, and lxml joins the text in C; blocks
    with nested block elements are walked in Python. Embedded figures and tables are not the paragraph's
    prose and are set aside meanwhile.
    """
    swaps = _without_floats(block) if next(block.iterdescendants(*FLOATS), None) is not None else []
    saved = [x.text for x in xrefs]
    for x in xrefs:
        x.text = MARK + (x.text or "")
    try:
        specials = list(block.iterdescendants(*SPECIAL))
        if specials:
            out: list[str] = []
            _collect(block, out, _walk_set(block, specials))
            raw = "".join(out)
        else:
            raw = "".join(block.itertext())
    finally:
        for x, text in zip(xrefs, saved):
            x.text = text
        for f, stand_in in reversed(swaps):
            stand_in.getparent().replace(stand_in, f)
    pieces = raw.split(MARK)
    positions, pos = [], 0
    for piece in pieces[:-1]:
        pos += len(piece)
        positions.append(pos)
    return "".join(pieces), positions if len(positions) == len(xrefs) else [None] * len(xrefs)


def citing_sentences(article: etree._Element, refs: list[tuple[etree._Element, list[str]]]) -> dict[str, list]:
    """For each cited id: the sentences that cite it, with the element each sits in (for de-duplication
    against the figure's own caption)."""
    by_block: dict[etree._Element, list[tuple[etree._Element, list[str]]]] = {}
    for x, rids in refs:
        block = _context_block(x)
        if block is not None:
            by_block.setdefault(block, []).append((x, rids))
    out: dict[str, list] = {}
    for block, xs in by_block.items():
        text, positions = _text_with_marks(block, [x for x, _ in xs])
        starts = sentence_bounds(text)
        for (_, rids), pos in zip(xs, positions):
            if pos is None:
                continue
            i = bisect.bisect_right(starts, pos) - 1
            end = starts[i + 1] if i + 1 < len(starts) else len(text)
            sentence = norm(text[starts[i] : end])
            for rid in rids:
                out.setdefault(rid, []).append((block, sentence))
    return out


def _figure(el: etree._Element, article: etree._Element, kind: str, counts: dict[str, int], cited: dict[str, list]) -> dict:
    fig_id = el.get("id") or ""
    caption = el.find("caption")
    label = text_of(el.find("label"))
    parent = el.getparent()
    if caption is None and parent is not None and parent.tag == "fig-group":  # panels captioned by the group
        caption = parent.find("caption")
        label = label or text_of(parent.find("label"))
    contexts = []
    for block, sentence in cited.get(fig_id, []):
        if sentence and sentence not in contexts and not any(a is el for a in block.iterancestors()):
            contexts.append(sentence)
    fig = {
        "fig_id": fig_id,
        "kind": kind,
        "label": label,
        "caption": text_of(caption),
        "caption_title": text_of(caption.find("title")) if caption is not None else "",
        "graphics": graphics(el) if kind == "figure" else _table_graphics(el),
        "where": _where(el, article),
        "xref_count": counts.get(fig_id, 0),
        "contexts": contexts,
        "own_license": None,
    }
    perm = el.find("permissions")
    if perm is not None:
        fig["own_license"] = permissions_license(perm)
    return fig


def _table_graphics(table: etree._Element) -> list[str]:
    """A table rendered as an image: its first graphic outside formulas and the caption."""
    for g in table.iter("graphic"):
        href = g.get(XLINK_HREF) or g.get("href")
        if href and next(g.iterancestors("disp-formula", "inline-formula", "caption"), None) is None:
            return [href.strip()]
    return []


def extract_article(article: etree._Element, *, tables: bool = False) -> dict:
    """Metadata, licence and figures of one `<article>` (sub-articles' figures included)."""
    out = article_metadata(article)
    ref_types = frozenset({"fig", "table"}) if tables else frozenset({"fig"})
    refs = list(_xrefs(article, ref_types))
    counts: dict[str, int] = {}
    for _, rids in refs:
        for rid in rids:
            counts[rid] = counts.get(rid, 0) + 1
    cited = citing_sentences(article, refs)
    figures = [_figure(f, article, "figure", counts, cited) for f in article.iter("fig")]
    if tables:
        figures += [_figure(t, article, "table", counts, cited) for t in article.iter("table-wrap") if _table_graphics(t)]
    out["figures"] = figures
    return out


def extract(data: bytes, *, tables: bool = False) -> Parsed:
    """Every article in one XML file (a JATS article, a Europe PMC `<articles>` file, an OAI-PMH response)."""
    root, recovered = parse_xml(drop_reference_lists(data))
    articles = find_articles(root)
    etree.strip_elements(root, "tex-math", with_tail=False)
    return Parsed([extract_article(a, tables=tables) for a in articles], recovered)
