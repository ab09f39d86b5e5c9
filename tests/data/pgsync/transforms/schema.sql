-- PGSync's transforms (replace, then rename, then concat: its README's examples) and JSON columns (its
-- examples/book schema's `doc->...` columns) on a small book schema of PGSync's examples/book.
CREATE TABLE publisher (id serial PRIMARY KEY, code text, name text NOT NULL);
CREATE TABLE book (id serial PRIMARY KEY, isbn text NOT NULL UNIQUE, title text NOT NULL, doc jsonb,
                   publisher_id integer REFERENCES publisher (id));
CREATE TABLE language (id serial PRIMARY KEY, code text NOT NULL UNIQUE);
CREATE TABLE book_language (id serial PRIMARY KEY, book_id integer REFERENCES book (id),
                            language_id integer REFERENCES language (id), UNIQUE (book_id, language_id));
