"""What may leave the process about a URL: never its user, password or query values."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def scrub(text: str) -> str:
    """`text` with every URL in it scrubbed: user info and each query value masked, fragment dropped."""
    return URL.sub(lambda found: _scrub_url(found.group()), text)


def _scrub_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    _user, at, host = parts.netloc.rpartition("@")
    netloc = f"{MASK}@{host}" if at else host
    query = "&".join(_mask_value(item) for item in parts.query.split("&") if item)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _mask_value(item: str) -> str:
    name, equals, _ = item.partition("=")
    return f"{name}={MASK}" if equals else MASK
