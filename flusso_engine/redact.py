"""Secrets out of every text flusso shows: a DSN's password, a URL's userinfo, a known secret.

One place for the three ways a password could reach a log line or a message: in a PostgreSQL
connection string (`redact_dsn`), in a host URL (`redact_url`), or quoted by a library in its own
error text (`scrub`, with the secrets `secrets_in` collects from the config).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"


def redact_dsn(dsn: str) -> str:
    """A DSN (or URL) with its password replaced, fit for a log line or a message.

    Errs on the side of hiding too much: in a URL everything between `user:` and the last `@` goes.
    """
    dsn = re.sub(r"(://[^:/?#@]*:)[^/?#]*@", r"\1***@", dsn)
    dsn = re.sub(r"(://[^:/?#@]*:).*@", r"\1***@", dsn)  # a password holding "/" or "@"
    dsn = re.sub(r"([?&](?:ssl)?password=)[^&]*", r"\1***", dsn, flags=re.IGNORECASE)  # sslpassword: the key's
    return re.sub(r"(\b(?:ssl)?password\s*=\s*)('(?:\\.|[^'])*'?|\S+)", r"\1***", dsn, flags=re.IGNORECASE)


def redact_url(url: str) -> str:
    """A host URL fit for a message: its userinfo (user and password) replaced by `***`."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{HIDDEN}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)).removeprefix("//")


def secrets_in(urls: Iterable[str], *passwords: str | None) -> frozenset[str]:
    """The passwords a library could quote back: those inside the URLs, and the ones given."""
    found = {pw for url in urls if (pw := urlsplit(url).password)}
    return frozenset(found | {pw for pw in passwords if pw})


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every one of `secrets` taken out, whatever a library put in it."""
    for secret in secrets:
        text = text.replace(secret, HIDDEN)
    return text
