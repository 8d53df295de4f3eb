"""Article and figure licences, normalised to a short closed list.

Users build corpora they are allowed to use, so a licence must be exact or say it is not known: a
Creative Commons URL wins, then a specific `@license-type`, then the licence prose (which often carries
the URL too), then "all rights reserved" when the text says so; anything else is "other" (a licence we
cannot classify) or "unknown" (no licence at all).
"""

from __future__ import annotations

import re

LICENSES = (
    "CC0",
    "CC BY",
    "CC BY-SA",
    "CC BY-ND",
    "CC BY-NC",
    "CC BY-NC-SA",
    "CC BY-NC-ND",
    "public domain",
    "all rights reserved",
    "other",
    "unknown",
)
COMMERCIAL = frozenset({"CC0", "CC BY", "CC BY-SA", "CC BY-ND", "public domain"})
NONCOMMERCIAL = frozenset({"CC BY-NC", "CC BY-NC-SA", "CC BY-NC-ND"})
# names a recipe's `licenses:` list may use for a whole group
GROUPS = {"commercial": COMMERCIAL, "noncommercial": COMMERCIAL | NONCOMMERCIAL, "open": COMMERCIAL | NONCOMMERCIAL}

_CC_URL = re.compile(r"creativecommons\.org/(licen[sc]es?|publicdomain)/([a-z\-]+)", re.I)
_CC_PARTS = {
    "by": "CC BY",
    "by-sa": "CC BY-SA",
    "by-nd": "CC BY-ND",
    "by-nc": "CC BY-NC",
    "by-nc-sa": "CC BY-NC-SA",
    "by-sa-nc": "CC BY-NC-SA",
    "by-nc-nd": "CC BY-NC-ND",
    "by-nd-nc": "CC BY-NC-ND",
}
_TYPE_WORDS = {"cc0": "CC0", "public-domain": "public domain", "publicdomain": "public domain"}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def from_url(url: str | None) -> str | None:
    """The licence a Creative Commons URL names, else None."""
    m = _CC_URL.search(url or "")
    if not m:
        return None
    kind, name = m.group(1).lower(), m.group(2).lower()
    if kind == "publicdomain":
        return "CC0" if name == "zero" else "public domain"
    return _CC_PARTS.get(name)


def from_type(license_type: str | None) -> str | None:
    """`@license-type` values that name a licence ("cc-by-nc", "CC BY", "public-domain"); "open-access"
    and "creative-commons" name none."""
    if not license_type:
        return None
    t = license_type.strip().lower().replace(" ", "-").replace("_", "-")
    if t in _TYPE_WORDS:
        return _TYPE_WORDS[t]
    if t.startswith("cc-"):
        return _CC_PARTS.get(re.sub(r"-\d.*$", "", t[3:]))
    return None


def from_prose(text: str | None) -> str | None:
    """The licence licence prose names, else None (a URL inside the prose counts first)."""
    if not text:
        return None
    found = from_url(text)
    if found:
        return found
    k = f" {_key(text)} "
    if " cc0 " in k or "public domain dedication" in k or "no rights reserved" in k:
        return "CC0"
    if "public domain" in k:
        return "public domain"
    if "creative commons" in k or " cc by" in k:
        nc = any(w in k for w in (" noncommercial ", " non commercial ", " nc "))
        sa = any(w in k for w in (" share alike ", " sharealike ", " sa "))
        nd = any(w in k for w in (" no derivative", " noderiv", " nd "))
        if "attribution" in k or " cc by" in k or nc or sa or nd:
            return "CC BY" + ("-NC" if nc else "") + ("-SA" if sa and not nd else "") + ("-ND" if nd else "")
    if "all rights reserved" in k:
        return "all rights reserved"
    return None


def normalise_license(
    *,
    urls: list[str] = (),
    license_type: str | None = None,
    prose: str | None = None,
    copyright_statement: str | None = None,
    present: bool = False,
) -> tuple[str, str]:
    """(licence, where it came from). `present` says a licence element exists even if it is empty."""
    tries = [(from_url, url, "url") for url in urls] + [
        (from_type, license_type, "license-type"),
        (from_prose, prose, "prose"),
        (from_prose, copyright_statement, "copyright-statement"),
    ]
    for read, text, source in tries:
        found = read(text)
        if found:
            return found, source
    if present or any(urls) or (prose or "").strip():
        return "other", "license"
    return "unknown", "none"


def commercial_use(license: str) -> bool | None:
    """True when the licence allows commercial use, False when it forbids it, None when it is not known."""
    if license in COMMERCIAL:
        return True
    if license in NONCOMMERCIAL or license == "all rights reserved":
        return False
    return None


def parse_allowed(names: list[str]) -> frozenset[str]:
    """A recipe's `licenses:` list as canonical names; groups (commercial, noncommercial) expand.

    Raises ValueError naming every entry that is not a licence, with the accepted spellings.
    """
    canon = {_key(n): n for n in LICENSES}
    canon.update({_key(n.replace("CC ", "CC-")): n for n in LICENSES})
    allowed, bad = set(), []
    for name in names:
        k = _key(str(name))
        if k in GROUPS:
            allowed |= GROUPS[k]
        elif k in canon:
            allowed.add(canon[k])
        elif from_url(str(name)) or from_type(str(name)):
            allowed.add(from_url(str(name)) or from_type(str(name)))
        else:
            bad.append(str(name))
    if bad:
        raise ValueError(f"unknown licence(s) {bad}; use any of {list(LICENSES)} or a group: {sorted(GROUPS)}")
    return frozenset(allowed)
