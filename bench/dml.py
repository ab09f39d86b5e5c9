"""Random DML on every table of the bookstore at a steady rate: the live writes beside a reseed.

Unlike bench/workload.py's mix (updates mostly, never a book added or removed), this one inserts
and deletes books too, so the root table's row count moves while a reseed runs, and it touches
every table: book, book_detail, book_author, author, publisher, review, review_tag, reader, tag.
Each change is one transaction (a book insert carries its detail, an author and a review with it).
Fan-out stays modest: a renamed tag is one the writer created (an original tag is on a tenth of
the books), a renamed publisher reaches ~50 books. Open loop: commit `i` is due at
`t0 + i / rate` over `threads` connections, until `stop` is set.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DIRTY  # noqa: E402

# (kind, share) of the commits
MIX: list[tuple[str, float]] = [
    ("book.update", 0.16), ("book.insert", 0.05), ("book.delete", 0.04),
    ("book_detail.update", 0.07), ("book_author.insert", 0.04), ("book_author.delete", 0.03),
    ("review.insert", 0.12), ("review.update", 0.12), ("review.delete", 0.07),
    ("review_tag.insert", 0.07), ("review_tag.delete", 0.04),
    ("reader.update", 0.06), ("author.update", 0.05), ("publisher.update", 0.01),
    ("tag.insert", 0.03), ("tag.update", 0.04),
]
RUN_TAG = format(int(time.time() * 1000) % 16**6, "06x")  # unique names (isbn, tag) per process


class Rows:
    """What the writers pick from and what they did to it (shared, under one lock)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        one = lambda q: conn.execute(q).fetchone()[0] or 0  # noqa: E731
        self.books, self.reviews = one("SELECT max(id) FROM book"), one("SELECT max(id) FROM review")
        self.authors, self.readers = one("SELECT max(id) FROM author"), one("SELECT max(id) FROM reader")
        self.publishers, self.tags = one("SELECT max(id) FROM publisher"), one("SELECT max(id) FROM tag")
        self.lock = threading.Lock()
        self.new_books: list[int] = []
        self.new_reviews: list[int] = []
        self.new_tags: list[int] = []
        self.gone_books: set[int] = set()
        self.gone_reviews: set[int] = set()
        self.touched: set[int] = set()

    def book(self, rng: random.Random) -> int:
        with self.lock:
            while True:
                b = (self.new_books[rng.randrange(len(self.new_books))]
                     if self.new_books and rng.random() < 0.2 else rng.randint(1, self.books))
                if b not in self.gone_books:
                    self.touched.add(b)
                    return b

    def review(self, rng: random.Random) -> int:
        with self.lock:
            while True:
                r = (self.new_reviews[rng.randrange(len(self.new_reviews))]
                     if self.new_reviews and rng.random() < 0.3 else rng.randint(1, self.reviews))
                if r not in self.gone_reviews:
                    return r

    def gone(self, book: int | None = None, review: int | None = None) -> None:
        with self.lock:
            if book is not None:
                self.gone_books.add(book)
            if review is not None:
                self.gone_reviews.add(review)


class DmlWriter:
    """Commits MIX at `rate` commits/s over `threads` connections until `stop` is set."""

    def __init__(self, dsn: str, rate: float, threads: int, seed: int) -> None:
        self.dsn, self.rate, self.threads, self.seed = dsn, rate, threads, seed
        kinds, weights = zip(*MIX, strict=True)
        self.kinds, self.cum = kinds, list(itertools.accumulate(weights))
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done: dict[str, int] = dict.fromkeys(kinds, 0)
        self.errors: list[str] = []
        self.late: list[float] = []
        self.rows: Rows | None = None
        self.t0 = self.t1 = 0.0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ()").format(sql.Identifier(DIRTY)))
            self.rows = Rows(conn)
        self.t0 = time.monotonic() + 0.05
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True, name=f"dml-{i}")
                         for i in range(self.threads)]
        for t in self._threads:
            t.start()

    def finish(self) -> dict[str, Any]:
        """Stop the writers; what they did."""
        self.stop.set()
        for t in self._threads:
            t.join(30)
        self.t1 = time.monotonic()
        total = sum(self.done.values())
        late = sorted(self.late)
        return {"commits": total, "seconds": round(self.t1 - self.t0, 2),
                "achieved_per_s": round(total / max(self.t1 - self.t0, 1e-9), 1), "offered_per_s": self.rate,
                "threads": self.threads, "by_kind": dict(self.done), "errors": len(self.errors),
                "first_errors": self.errors[:3], "late_commits": len(late),
                "late_max_ms": round(1000 * late[-1], 1) if late else None,
                "books_inserted": len(self.rows.new_books), "books_deleted": self.done["book.delete"]}

    def _loop(self, n: int) -> None:
        rng = random.Random(f"{self.seed}:{n}")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET application_name = 'flusso_bench_reseed_writer'")
            for seq in itertools.count(n, self.threads):
                due = self.t0 + seq / self.rate
                now = time.monotonic()
                if due > now:
                    if self.stop.wait(due - now):
                        return
                elif self.stop.is_set():
                    return
                else:
                    self.late.append(now - due)
                u = rng.random() * self.cum[-1]
                kind = next(k for k, c in zip(self.kinds, self.cum, strict=True) if u < c)
                try:
                    with conn.transaction():
                        made = self._change(conn, kind, seq, rng)
                except psycopg.Error as err:  # a row another writer removed meanwhile: counted, not fatal
                    with self.lock:
                        self.errors.append(f"{kind}: {str(err).strip()[:200]}")
                    if conn.broken:
                        return
                    continue
                with self.lock:
                    self.done[kind] += 1
                with self.rows.lock:  # others pick them only once they are committed
                    for pool, key in made:
                        pool.append(key)

    def _change(self, conn: psycopg.Connection, kind: str, seq: int, rng: random.Random) -> list[tuple[list, int]]:
        """One commit's statements; the rows it created, for the pools they go in once committed."""
        rows = self.rows
        assert rows is not None
        x = lambda query, *params: conn.execute(query, params, prepare=True)  # noqa: E731
        if kind == "book.insert":
            book = x("INSERT INTO book (isbn, title, publisher_id, price, pages, genres) "
                     "VALUES (%s, %s, %s, %s, %s, '{fiction}') RETURNING id",
                     f"R{RUN_TAG}{seq:010d}", f"Reseed {seq}", rng.randint(1, rows.publishers),
                     rng.randrange(499, 9999) / 100, rng.randint(40, 1200)).fetchone()[0]
            x("INSERT INTO book_detail (book_id, summary, language, weight_grams) VALUES (%s, %s, 'en', %s)",
              book, f"written during a reseed {seq}", rng.randint(80, 2500))
            x("INSERT INTO book_author (book_id, author_id, position) VALUES (%s, %s, 1)",
              book, rng.randint(1, rows.authors))
            review = x("INSERT INTO review (book_id, reader_id, rating, body) VALUES (%s, %s, %s, %s) RETURNING id",
                       book, rng.randint(1, rows.readers), rng.randint(1, 5), f"first review {seq}").fetchone()[0]
            with rows.lock:
                rows.touched.add(book)
            return [(rows.new_books, book), (rows.new_reviews, review)]
        elif kind == "book.delete":
            book = rows.book(rng)
            rows.gone(book=book)
            x("DELETE FROM book WHERE id = %s", book)
        elif kind == "book.update":
            x("UPDATE book SET subtitle = %s, price = %s WHERE id = %s",
              f"s{RUN_TAG}-{seq}", rng.randrange(499, 9999) / 100, rows.book(rng))
        elif kind == "book_detail.update":
            x("UPDATE book_detail SET weight_grams = %s WHERE book_id = %s", rng.randint(80, 2500), rows.book(rng))
        elif kind == "book_author.insert":
            x("INSERT INTO book_author (book_id, author_id, position) VALUES (%s, %s, 9) ON CONFLICT DO NOTHING",
              rows.book(rng), rng.randint(1, rows.authors))
        elif kind == "book_author.delete":
            book = rows.book(rng)
            x("DELETE FROM book_author WHERE book_id = %s AND author_id = "
              "(SELECT max(author_id) FROM book_author WHERE book_id = %s)", book, book)
        elif kind == "review.insert":
            review = x("INSERT INTO review (book_id, reader_id, rating, body) VALUES (%s, %s, %s, %s) RETURNING id",
                       rows.book(rng), rng.randint(1, rows.readers), rng.randint(1, 5),
                       f"bench review {seq}").fetchone()[0]
            return [(rows.new_reviews, review)]
        elif kind == "review.update":
            x("UPDATE review SET rating = %s, helpful = helpful + 1 WHERE id = %s", rng.randint(1, 5), rows.review(rng))
        elif kind == "review.delete":
            review = rows.review(rng)
            rows.gone(review=review)
            x("DELETE FROM review WHERE id = %s", review)
        elif kind == "review_tag.insert":
            with rows.lock:
                tag = rows.new_tags[-1] if rows.new_tags and rng.random() < 0.5 else rng.randint(1, rows.tags)
            x("INSERT INTO review_tag (review_id, tag_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
              rows.review(rng), tag)
        elif kind == "review_tag.delete":
            x("DELETE FROM review_tag WHERE review_id = %s", rows.review(rng))
        elif kind == "reader.update":
            x("UPDATE reader SET name = %s WHERE id = %s", f"Reader {seq}", rng.randint(1, rows.readers))
        elif kind == "author.update":
            x("UPDATE author SET name = %s WHERE id = %s", f"Author {seq}", rng.randint(1, rows.authors))
        elif kind == "publisher.update":
            x("UPDATE publisher SET name = %s WHERE id = %s", f"Publisher {seq}", rng.randint(1, rows.publishers))
        elif kind in ("tag.insert", "tag.update"):
            with rows.lock:
                mine = rows.new_tags[rng.randrange(len(rows.new_tags))] if rows.new_tags else None
            if kind == "tag.update" and mine is not None:
                x("UPDATE tag SET name = %s WHERE id = %s", f"t{RUN_TAG}-{seq}", mine)
            else:
                tag = x("INSERT INTO tag (name) VALUES (%s) RETURNING id", f"t{RUN_TAG}-{seq}").fetchone()[0]
                return [(rows.new_tags, tag)]
        else:
            raise AssertionError(kind)
        return []
