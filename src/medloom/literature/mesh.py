"""MeSH terms from local PubMed/MEDLINE XML files (`.xml` or `.xml.gz`), keyed by PMID."""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

from lxml import etree


def mesh_files(paths: list[str]) -> list[str]:
    """Every MEDLINE file named, folders expanded (sorted, so the order is the same everywhere)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(str(f) for f in Path(p).rglob("*") if f.name.endswith((".xml", ".xml.gz")))
        else:
            out.append(p)
    return out


def read_mesh_file(path: str) -> dict[str, list[str]]:
    """PMID -> MeSH descriptor names ("Descriptor/Qualifier" for each qualifier too), in file order."""
    terms: dict[str, list[str]] = {}
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        for _, cit in etree.iterparse(f, tag="MedlineCitation", resolve_entities=False, no_network=True, huge_tree=True):
            pmid = (cit.findtext("PMID") or "").strip()
            found = []
            for heading in cit.iterfind("MeshHeadingList/MeshHeading"):
                name = (heading.findtext("DescriptorName") or "").strip()
                if not name:
                    continue
                found.append(name)
                found += [f"{name}/{q.text.strip()}" for q in heading.iterfind("QualifierName") if q.text]
            if pmid:
                terms[pmid] = found
            cit.clear()
            while cit.getprevious() is not None:
                del cit.getparent()[0]
    return terms


@lru_cache(maxsize=2)
def load_mesh(files: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    """The merged PMID index of (path, fingerprint) pairs; cached per process because every part of a
    source needs the same index and the fingerprint changes when a file does."""
    merged: dict[str, list[str]] = {}
    for path, _ in files:
        merged.update(read_mesh_file(path))
    return merged
