"""Fill the bookstore schema with deterministic, realistically proportioned data, fast.

    python examples/bookstore/generate.py --books 100000 [--seed 42] [--dsn DSN]

For N books: N/50 publishers, N/5 authors (1-3 per book), N/2 readers, 0-5 reviews per book
with 0-2 of 40 tags each, and a detail row for 4 books in 5. The same seed gives the same rows.
Rows go in with COPY in one transaction (the existing rows are replaced), then sequences are reset
and the tables vacuumed and analyzed, so that the planner sees real sizes and index-only scans work
at once. Loads schema.sql first when the database does not have the tables yet.
Importable: `generate(conn, books, seed)`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

SCHEMA = Path(__file__).with_name("schema.sql")
DEFAULT_DSN = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
TABLES = (
    "publisher",
    "author",
    "reader",
    "tag",
    "book",
    "book_detail",
    "book_author",
    "review",
    "review_tag",
)
SERIALS = ("publisher", "author", "book", "reader", "review", "tag")

_EPOCH = datetime(2015, 1, 1, tzinfo=UTC)
_WORDS = (
    "river night garden stone silver winter empire shadow glass letter house city dream storm ocean "
    "forest fire light song island mountain secret journey memory machine kingdom harbor field echo "
    "paper clock mirror bridge wolf crown lantern orchard salt iron signal atlas comet thread"
).split()
_FIRST = "Ada Bruno Chiara Dario Elena Franco Giulia Hugo Irene Jonas Kira Luca Marta Nadia Omar".split()
_LAST = "Rossi Bianchi Ferrari Esposito Romano Colombo Ricci Marino Greco Gallo Conti Costa".split()
_COUNTRIES = ("IT", "FR", "DE", "GB", "US", "ES", "NL", "SE", "JP", "BR")
_GENRES = ("fiction", "mystery", "history", "science", "poetry", "fantasy", "biography", "travel", "cooking")
_FORMATS = ("hardcover", "paperback", "ebook", "audiobook")
_LANGUAGES = ("en", "it", "fr", "de", "es")
_TAGS = tuple(f"{w}-{k}" for k in ("theme", "mood", "style", "setting") for w in _WORDS[:10])


def _words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(lo, hi)))


def _isbn(n: int) -> str:
    digits = f"978{n:09d}"
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    return f"{digits}{check}"


def _when(rng: random.Random, days: int) -> datetime:
    return _EPOCH + timedelta(seconds=rng.randrange(days * 86400))


def _publishers(rng: random.Random, n: int) -> Iterable[tuple]:
    for i in range(1, n + 1):
        name = f"{rng.choice(_WORDS).title()} {rng.choice(('Books', 'Press', 'House', 'Editions'))}"
        yield (
            i,
            name,
            rng.choice(_COUNTRIES),
            date(1900, 1, 1) + timedelta(days=rng.randrange(40000)),
            f"https://publisher{i}.example",
            _when(rng, 3000),
        )


def _authors(rng: random.Random, n: int) -> Iterable[tuple]:
    for i in range(1, n + 1):
        bio = _words(rng, 8, 30) if rng.random() < 0.7 else None
        born = date(1920, 1, 1) + timedelta(days=rng.randrange(30000))
        yield (i, f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", born, rng.choice(_COUNTRIES), bio)


def _readers(rng: random.Random, n: int) -> Iterable[tuple]:
    for i in range(1, n + 1):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        yield (
            i,
            f"{first} {last}",
            f"{first}.{last}{i}@example.com".lower(),
            _when(rng, 3000),
            uuid.UUID(int=rng.getrandbits(128), version=4),
            rng.random() < 0.3,
        )


def _books(rng: random.Random, n: int, publishers: int) -> Iterable[tuple]:
    for i in range(1, n + 1):
        attributes = None
        if rng.random() < 0.6:
            attributes = {"format": rng.choice(_FORMATS), "edition": rng.randint(1, 5)}
        yield (
            i,
            _isbn(i),
            _words(rng, 1, 4).title(),
            _words(rng, 2, 6) if rng.random() < 0.3 else None,
            rng.randint(1, publishers) if rng.random() < 0.95 else None,
            date(1950, 1, 1) + timedelta(days=rng.randrange(27000)),
            Decimal(rng.randrange(499, 9999)) / 100,
            rng.randint(40, 1200),
            rng.random() < 0.85,
            rng.sample(_GENRES, rng.randint(1, 3)),
            Jsonb(attributes) if attributes is not None else None,
            _when(rng, 3000),
        )


def _details(rng: random.Random, n: int) -> Iterable[tuple]:
    for i in range(1, n + 1):
        if rng.random() < 0.8:
            dims = {"h": rng.randint(150, 300), "w": rng.randint(100, 220), "d": rng.randint(5, 80)}
            yield (i, _words(rng, 10, 40), rng.choice(_LANGUAGES), rng.randint(80, 2500), Jsonb(dims))


def _book_authors(rng: random.Random, n: int, authors: int) -> Iterable[tuple]:
    for i in range(1, n + 1):
        for pos, author in enumerate(rng.sample(range(1, authors + 1), min(authors, rng.randint(1, 3))), 1):
            yield (i, author, pos)


def _reviews(rng: random.Random, n: int, readers: int, tags: list[tuple]) -> Iterable[tuple]:
    """Reviews, with the review_tag rows of each collected into `tags` on the way."""
    review = 0
    for book in range(1, n + 1):
        for _ in range(rng.randint(0, 5)):
            review += 1
            reader = rng.randint(1, readers) if rng.random() < 0.9 else None
            body = _words(rng, 5, 40)
            yield (review, book, reader, rng.randint(1, 5), body, rng.randint(0, 50), _when(rng, 3500))
            tags.extend((review, t) for t in rng.sample(range(1, len(_TAGS) + 1), rng.randint(0, 2)))


_COLUMNS: dict[str, Sequence[str]] = {
    "publisher": ("id", "name", "country", "founded", "website", "updated_at"),
    "author": ("id", "name", "born", "nationality", "bio"),
    "reader": ("id", "name", "email", "joined_at", "uid", "verified"),
    "tag": ("id", "name"),
    "book": (
        "id",
        "isbn",
        "title",
        "subtitle",
        "publisher_id",
        "published_on",
        "price",
        "pages",
        "in_print",
        "genres",
        "attributes",
        "created_at",
    ),
    "book_detail": ("book_id", "summary", "language", "weight_grams", "dimensions"),
    "book_author": ("book_id", "author_id", "position"),
    "review": ("id", "book_id", "reader_id", "rating", "body", "helpful", "created_at"),
    "review_tag": ("review_id", "tag_id"),
}


def _copy(cur: psycopg.Cursor, table: str, rows: Iterable[tuple], progress: Callable[[str], None]) -> int:
    started = time.perf_counter()
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, _COLUMNS[table]))
    )
    count = 0
    with cur.copy(stmt) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    progress(f"{table:<12} {count:>9,} rows  {time.perf_counter() - started:6.1f} s")
    return count


def _has_schema(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('public.book') IS NOT NULL").fetchone()[0]


def _drop_foreign_keys(cur: psycopg.Cursor) -> list[sql.Composable]:
    """Drop the tables' foreign keys and return the statements that add them back.

    A foreign key checks each copied row with a trigger of its own (most of the load time);
    added back once, it is validated with one join per constraint instead.
    """
    rows = cur.execute(
        "SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE k.contype = 'f' AND k.conrelid = ANY(%s::regclass[])",
        (list(TABLES),),
    ).fetchall()
    restore = []
    for schema, table, name, definition in rows:
        target = sql.Identifier(schema, table)
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(target, sql.Identifier(name)))
        # the definition is pg_get_constraintdef()'s own SQL text, quoted by the server
        restore.append(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                target, sql.Identifier(name), sql.SQL(definition)
            )
        )
    return restore


def generate(
    conn: psycopg.Connection, books: int, seed: int = 42, progress: Callable[[str], None] = lambda _: None
) -> dict[str, int]:
    """Replace the bookstore's rows with `books` books and their children; returns rows per table.

    Commits on success; foreign keys are dropped for the load and validated when added back.
    Each table has a generator of its own, seeded from `seed` and the table's
    name, so one table's proportions can change without reshuffling the others.
    """
    publishers, authors, readers = max(1, books // 50), max(1, books // 5), max(1, books // 2)
    rng = {t: random.Random(f"{seed}:{t}") for t in TABLES}
    review_tags: list[tuple] = []
    rows: dict[str, Callable[[], Iterable[tuple]]] = {  # in load order; review fills review_tags
        "publisher": lambda: _publishers(rng["publisher"], publishers),
        "author": lambda: _authors(rng["author"], authors),
        "reader": lambda: _readers(rng["reader"], readers),
        "tag": lambda: enumerate(_TAGS, 1),
        "book": lambda: _books(rng["book"], books, publishers),
        "book_detail": lambda: _details(rng["book_detail"], books),
        "book_author": lambda: _book_authors(rng["book_author"], books, authors),
        "review": lambda: _reviews(rng["review"], books, readers, review_tags),
        "review_tag": lambda: review_tags,
    }
    if not _has_schema(conn):
        conn.execute(SCHEMA.read_text())
    conn.commit()  # so that the load below is a transaction of its own, committed at its end
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(map(sql.Identifier, TABLES)))
        )
        restore = _drop_foreign_keys(cur)
        counts = {table: _copy(cur, table, make(), progress) for table, make in rows.items()}
        for stmt in restore:
            cur.execute(stmt)
        for table in SERIALS:
            cur.execute(
                sql.SQL("SELECT setval(pg_get_serial_sequence({t}, 'id'), {n}, false)").format(
                    t=sql.Literal(table), n=sql.Literal(counts[table] + 1)
                )
            )
    autocommit, conn.autocommit = conn.autocommit, True  # VACUUM runs outside a transaction
    try:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.SQL(", ").join(map(sql.Identifier, TABLES))))
    finally:
        conn.autocommit = autocommit
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=1000, help="number of books (default 1000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("FLUSSO_PG_DSN", DEFAULT_DSN),
        help="PostgreSQL DSN (default $FLUSSO_PG_DSN or the local service)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with psycopg.connect(args.dsn) as conn:
        counts = generate(conn, args.books, args.seed, progress=lambda line: print(line, file=sys.stderr))
    total = sum(counts.values())
    print(f"{total:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
