-- The bookstore: flusso's demo and benchmark data set.
--
-- Every relation type appears below the root `book`, down to three levels:
--   book -> publisher          many_to_one  (book.publisher_id)
--   book -> book_detail        one_to_one   (book_detail.book_id is its primary key)
--   book -> author             many_to_many (through book_author)
--   book -> review             one_to_many  (review.book_id)
--           review -> reader   many_to_one  (review.reader_id)
--           review -> tag      many_to_many (through review_tag)
-- Foreign-key columns are indexed: resolve walks them upwards, build walks them downwards.

CREATE TABLE publisher (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    country     varchar(2),
    founded     date,
    website     text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE author (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    born        date,
    nationality varchar(2),
    bio         text
);

CREATE TABLE book (
    id           bigserial PRIMARY KEY,
    isbn         varchar(17) NOT NULL UNIQUE,
    title        text NOT NULL,
    subtitle     text,
    publisher_id bigint REFERENCES publisher (id) ON DELETE SET NULL,
    published_on date,
    price        numeric(10, 2),
    pages        integer,
    in_print     boolean NOT NULL DEFAULT true,
    genres       text[] NOT NULL DEFAULT '{}',
    attributes   jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX book_publisher_id_idx ON book (publisher_id);

CREATE TABLE book_detail (
    book_id      bigint PRIMARY KEY REFERENCES book (id) ON DELETE CASCADE ON UPDATE CASCADE,
    summary      text,
    language     varchar(8),
    weight_grams integer,
    dimensions   jsonb
);

CREATE TABLE book_author (
    book_id   bigint NOT NULL REFERENCES book (id) ON DELETE CASCADE ON UPDATE CASCADE,
    author_id bigint NOT NULL REFERENCES author (id) ON DELETE CASCADE,
    position  smallint NOT NULL DEFAULT 1,
    PRIMARY KEY (book_id, author_id)
);
CREATE INDEX book_author_author_id_idx ON book_author (author_id);

CREATE TABLE reader (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    email      varchar(200),
    joined_at  timestamptz NOT NULL DEFAULT now(),
    uid        uuid NOT NULL,
    verified   boolean NOT NULL DEFAULT false
);

CREATE TABLE review (
    id         bigserial PRIMARY KEY,
    book_id    bigint NOT NULL REFERENCES book (id) ON DELETE CASCADE ON UPDATE CASCADE,
    reader_id  bigint REFERENCES reader (id) ON DELETE SET NULL,
    rating     smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body       text,
    helpful    integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX review_book_id_idx ON review (book_id);
CREATE INDEX review_reader_id_idx ON review (reader_id);

CREATE TABLE tag (
    id   serial PRIMARY KEY,
    name varchar(40) NOT NULL UNIQUE
);

CREATE TABLE review_tag (
    review_id bigint NOT NULL REFERENCES review (id) ON DELETE CASCADE,
    tag_id    integer NOT NULL REFERENCES tag (id) ON DELETE CASCADE,
    PRIMARY KEY (review_id, tag_id)
);
CREATE INDEX review_tag_tag_id_idx ON review_tag (tag_id);
