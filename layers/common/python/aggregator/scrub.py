"""What may leave the process about a URL: never its user, password or query values.

Whitespace does not end a URL's secret parts: its user info runs to its last `@` before its query (a
password may hold a `/`), and once a query or fragment begins, it runs to the end of the text. What follows
a URL's query in the same text is masked with it, the price of never showing a secret; a URL without a
query ends where the next URL begins.
"""

from __future__ import annotations

import re

MASK = "***"
URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def scrub(text: str) -> str:
    """`text` with every URL in it scrubbed: user info and each query value masked, fragment dropped."""
    kept, at = [], 0
    for found in URL_START.finditer(text):
        start = found.start()
        if start < at:  # within the query of a URL before it: masked with that query
            continue
        following = URL_START.search(text, found.end())
        end = following.start() if following else len(text)
        if any(mark in text[found.end() : end] for mark in "?#"):
            end = len(text)
        kept += [text[at:start], _scrub_url(text[start:end])]
        at = end
    return "".join(kept) + text[at:]


def _scrub_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    ends = min((i for i in map(rest.find, "?#") if i != -1), default=len(rest))
    _user, at, place = rest[:ends].rpartition("@")  # to the last `@` before the query: a password may hold `/`
    query = rest[ends:].partition("#")[0]  # the fragment is dropped
    masked = "&".join(_mask_value(item) for item in query.removeprefix("?").split("&") if item)
    return f"{scheme}://{MASK + '@' if at else ''}{place}{'?' + masked if query else ''}"


def _mask_value(item: str) -> str:
    name, equals, _ = item.partition("=")
    return f"{name}={MASK}" if equals else MASK
