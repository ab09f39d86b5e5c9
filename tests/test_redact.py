"""Secrets out of every text flusso shows: DSNs, host URLs, and whatever a library quotes back.

Unit tests: no services needed.
"""

from __future__ import annotations

import pytest

from flusso_engine.redact import redact_dsn, redact_url, scrub, secrets_in

SECRET = "s3cr3t-pw-9f2c"


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (f"postgresql://flusso:{SECRET}@db:5432/shop", "postgresql://flusso:***@db:5432/shop"),
        (f"postgres://:{SECRET}@db/shop", "postgres://:***@db/shop"),
        (f"postgresql://flusso:p@ss/{SECRET}@db/shop", "postgresql://flusso:***@db/shop"),
        (f"postgresql://db/shop?user=u&password={SECRET}&sslmode=require", None),
        (
            f"host=db user=flusso password={SECRET} dbname=shop",
            "host=db user=flusso password=*** dbname=shop",
        ),
        (f"host=db password = '{SECRET} x' dbname=shop", "host=db password = *** dbname=shop"),
        ("postgresql://flusso@db/shop", "postgresql://flusso@db/shop"),
        (f"host=db sslkey=/k sslpassword={SECRET} dbname=shop", "host=db sslkey=/k sslpassword=*** dbname=shop"),
        (f"postgresql://db/shop?sslmode=verify-full&sslpassword={SECRET}", None),
    ],
)
def test_redact_dsn_hides_the_password(dsn: str, shown: str | None) -> None:
    redacted = redact_dsn(dsn)
    assert SECRET not in redacted
    if shown is not None:
        assert redacted == shown


def test_redact_url_and_redact_dsn_agree_on_a_host_url() -> None:
    url = f"https://admin:{SECRET}@search.example:9200"
    assert SECRET not in redact_url(url) and SECRET not in redact_dsn(url)
    assert redact_url(url) == "https://***@search.example:9200"


def test_scrub_takes_out_the_passwords_of_urls_and_the_given_ones() -> None:
    secrets = secrets_in([f"https://admin:{SECRET}@os:9200", "http://127.0.0.1:9200"], "other-pw", None)
    assert secrets == {SECRET, "other-pw"}
    text = f"connection to https://admin:{SECRET}@os:9200 refused (auth other-pw)"
    assert scrub(text, secrets) == "connection to https://admin:***@os:9200 refused (auth ***)"
