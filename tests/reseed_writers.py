"""Writers for the reseed tests: threads that keep committing random inserts, updates and deletes to
every table of the bookstore (examples/bookstore/schema.sql) at a modest, steady rate.

Root rows (`book`) are inserted three times as often as they are deleted, so their count drifts
upwards, which gives the bound a margin against a refresh inside a bulk request (reseed_bound.py).

Every operation picks its rows at random in SQL, from whatever exists at that moment, so the writers
keep going through a TRUNCATE (a pick from an empty table changes nothing). A statement that loses a
race (a foreign key whose parent another writer just deleted, a deadlock between two cascades) is
rolled back and counted in `errors`; it is part of a realistic load, not a failure of the harness.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import psycopg
from psycopg import sql

# a random existing row of a table with a bigint `id`, in one index probe (an InitPlan: evaluated once)
_PICK = "(SELECT {k} FROM {t} WHERE {k} >= (SELECT floor(random() * (max({k}) + 1)) FROM {t}) ORDER BY {k} LIMIT 1)"


def pick(table: str, key: str = "id") -> sql.Composed:
    return sql.SQL(_PICK).format(t=sql.Identifier(table), k=sql.Identifier(key))


_WORDS = "river night garden stone silver winter empire shadow glass letter house city dream storm".split()

Op = Callable[[psycopg.Connection, random.Random], int]  # returns the root rows it inserted (+) or deleted (-)


def _text(rng: random.Random, n: int = 3) -> str:
    return " ".join(rng.choices(_WORDS, k=n))


def _run(conn: psycopg.Connection, template: str, params: tuple = (), **parts: sql.Composable) -> int:
    """Run a fixed statement whose `{name}` parts are composed SQL (`pick`s, identifiers)."""
    return conn.execute(sql.SQL(template).format(**parts), params).rowcount  # type: ignore[arg-type]


def book_insert(conn: psycopg.Connection, rng: random.Random) -> int:
    """A book with its detail, an author and a review, in one transaction (as an application adds one)."""
    with conn.transaction():
        row = conn.execute(
            sql.SQL("INSERT INTO book (isbn, title, publisher_id, price, pages, genres) "
                    "VALUES (%s, %s, {p}, %s, %s, %s) RETURNING id").format(p=pick("publisher")),
            (f"w-{uuid.uuid4().hex[:14]}", _text(rng).title(), rng.randint(100, 9000) / 100,
             rng.randint(40, 900), rng.sample(["fiction", "poetry", "travel", "history"], 2)),
        ).fetchone()
        book = row[0]
        _run(conn, "INSERT INTO book_detail (book_id, summary, language) VALUES (%s, %s, 'en')", (book, _text(rng, 8)))
        _run(conn, "INSERT INTO book_author (book_id, author_id) SELECT %s, {a} WHERE EXISTS (SELECT FROM author)",
             (book,), a=pick("author"))
        _run(conn, "INSERT INTO review (book_id, reader_id, rating, body) VALUES (%s, {r}, %s, %s)",
             (book, rng.randint(1, 5), _text(rng, 6)), r=pick("reader"))
    return 1


def book_update(conn: psycopg.Connection, rng: random.Random) -> int:
    _run(conn, "UPDATE book SET title = %s, price = %s WHERE id = {b}",
         (_text(rng).title(), rng.randint(100, 9000) / 100), b=pick("book"))
    return 0


def book_delete(conn: psycopg.Connection, rng: random.Random) -> int:
    return -_run(conn, "DELETE FROM book WHERE id = {b}", b=pick("book"))


def _insert(table: str, columns: str, values: str) -> Op:
    def op(conn: psycopg.Connection, rng: random.Random) -> int:
        _run(conn, "INSERT INTO {t} ({c}) VALUES ({v})", (_text(rng).title(),), t=sql.Identifier(table),
             c=sql.SQL(columns), v=sql.SQL(values))
        return 0

    op.__name__ = f"{table}_insert"
    return op


def _update(table: str, assignment: str) -> Op:
    def op(conn: psycopg.Connection, rng: random.Random) -> int:
        _run(conn, "UPDATE {t} SET {a} WHERE id = {p}", (_text(rng).title(),), t=sql.Identifier(table),
             a=sql.SQL(assignment), p=pick(table))
        return 0

    op.__name__ = f"{table}_update"
    return op


def _delete(table: str, key: str = "id") -> Op:
    def op(conn: psycopg.Connection, rng: random.Random) -> int:
        _run(conn, "DELETE FROM {t} WHERE {k} = {p}", t=sql.Identifier(table), k=sql.Identifier(key),
             p=pick(table, key))
        return 0

    op.__name__ = f"{table}_delete"
    return op


def _unlink(table: str, first: str, second: str) -> Op:
    """Delete a random row of a join table (its key: two columns)."""
    def op(conn: psycopg.Connection, rng: random.Random) -> int:
        _run(conn, "DELETE FROM {t} WHERE ({a}, {b}) = (SELECT {a}, {b} FROM {t} WHERE {a} >= "
                   "(SELECT floor(random() * (max({a}) + 1)) FROM {t}) ORDER BY {a} LIMIT 1)",
             t=sql.Identifier(table), a=sql.Identifier(first), b=sql.Identifier(second))
        return 0

    op.__name__ = f"{table}_delete"
    return op


def detail_upsert(conn: psycopg.Connection, rng: random.Random) -> int:
    _run(conn, "WITH b AS {b} INSERT INTO book_detail (book_id, summary, language) SELECT id, %s, 'it' FROM b "
               "ON CONFLICT (book_id) DO UPDATE SET summary = excluded.summary", (_text(rng, 8),), b=pick("book"))
    return 0


def book_author_insert(conn: psycopg.Connection, rng: random.Random) -> int:
    _run(conn, "WITH b AS {b}, a AS {a} INSERT INTO book_author (book_id, author_id, position) "
               "SELECT b.id, a.id, 2 FROM b, a ON CONFLICT DO NOTHING", b=pick("book"), a=pick("author"))
    return 0


def review_insert(conn: psycopg.Connection, rng: random.Random) -> int:
    _run(conn, "WITH b AS {b} INSERT INTO review (book_id, reader_id, rating, body) SELECT id, {r}, %s, %s FROM b",
         (rng.randint(1, 5), _text(rng, 6)), b=pick("book"), r=pick("reader"))
    return 0


def review_update(conn: psycopg.Connection, rng: random.Random) -> int:
    _run(conn, "UPDATE review SET helpful = helpful + 1, body = %s WHERE id = {r}", (_text(rng, 5),),
         r=pick("review"))
    return 0


def review_tag_insert(conn: psycopg.Connection, rng: random.Random) -> int:
    _run(conn, "WITH r AS {r}, g AS {g} INSERT INTO review_tag (review_id, tag_id) SELECT r.id, g.id FROM r, g "
               "ON CONFLICT DO NOTHING", r=pick("review"), g=pick("tag"))
    return 0


def tag_insert(conn: psycopg.Connection, rng: random.Random) -> int:
    _run(conn, "INSERT INTO tag (name) VALUES (%s)", (f"{rng.choice(_WORDS)}-{uuid.uuid4().hex[:8]}",))
    return 0


# (operation, weight, table): root inserts 3 : root deletes 1, every table written
OPS: list[tuple[Op, int, str]] = [
    (book_insert, 3, "book"), (book_update, 4, "book"), (book_delete, 1, "book"),
    (_insert("publisher", "name", "%s"), 1, "publisher"), (_update("publisher", "name = %s"), 1, "publisher"),
    (_delete("publisher"), 1, "publisher"),
    (_insert("author", "name", "%s"), 1, "author"), (_update("author", "name = %s"), 1, "author"),
    (_delete("author"), 1, "author"),
    (_insert("reader", "name, uid", "%s, gen_random_uuid()"), 1, "reader"),
    (_update("reader", "name = %s"), 1, "reader"), (_delete("reader"), 1, "reader"),
    (tag_insert, 1, "tag"), (_update("tag", "name = %s || '-' || id"), 1, "tag"), (_delete("tag"), 1, "tag"),
    (detail_upsert, 2, "book_detail"), (_delete("book_detail", "book_id"), 1, "book_detail"),
    (book_author_insert, 2, "book_author"), (_unlink("book_author", "book_id", "author_id"), 1, "book_author"),
    (review_insert, 3, "review"), (review_update, 2, "review"), (_delete("review"), 1, "review"),
    (review_tag_insert, 2, "review_tag"), (_unlink("review_tag", "review_id", "tag_id"), 1, "review_tag"),
]


class Writers:
    """`threads` threads committing about `rate` random operations per second in all, until `stop`.

    `inserted` and `deleted` count the root rows the writers committed, `root_deletes` holds the span
    of each delete's statement (its commit is inside: see reseed_bound.floors); `ops` counts the
    committed operations by table, `errors` the rolled-back ones by exception type.
    """

    def __init__(self, dsn: str, rate: float = 20.0, threads: int = 2, seed: int = 12) -> None:
        self.dsn, self.rate = dsn, rate
        self.inserted = self.deleted = 0
        self.root_deletes: list[tuple[float, float]] = []  # (began, ended) of each committed root delete
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(random.Random(seed + i), threads),
                                          name=f"reseed-writer-{i}", daemon=True) for i in range(threads)]

    def start(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def __enter__(self) -> Writers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tables(self) -> set[str]:
        """The tables that got at least one committed change."""
        return {t for t, n in self.ops.items() if n}

    def _loop(self, rng: random.Random, threads: int) -> None:
        interval = threads / self.rate
        ops, weights = [o for o, _, _ in OPS], [w for _, w, _ in OPS]
        table_of = {o: t for o, _, t in OPS}
        conn: psycopg.Connection | None = None
        # each thread first runs its share of every operation once, so that every table is written early
        first = ops[int(threading.current_thread().name.rsplit("-", 1)[1])::threads]
        rng.shuffle(first)
        next_at = time.monotonic() + rng.random() * interval
        while not self._stop.is_set():
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic() - interval)  # steady, without bursts after a stall
            if self._stop.is_set():
                break
            op = first.pop() if first else rng.choices(ops, weights)[0]
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                began = time.monotonic()
                delta = op(conn, rng)
                ended = time.monotonic()
            except psycopg.Error as err:
                with self._lock:
                    self.errors[type(err).__name__] += 1
                if isinstance(err, psycopg.OperationalError) and conn is not None:
                    conn.close()
                continue
            with self._lock:
                self.ops[table_of[op]] += 1
                if delta > 0:
                    self.inserted += delta
                elif delta < 0:
                    self.deleted -= delta
                    self.root_deletes.extend([(began, ended)] * -delta)
        if conn is not None:
            conn.close()
