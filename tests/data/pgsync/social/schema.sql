-- PGSync's examples/social/schema.py (SQLAlchemy models) as SQL: users with tags and posts (through join
-- tables), posts with comments (through post_comment).
CREATE TABLE "user" (id serial PRIMARY KEY, name varchar NOT NULL UNIQUE, age integer, gender varchar);
CREATE TABLE post (id serial PRIMARY KEY, title varchar NOT NULL, slug varchar);
CREATE TABLE comment (id serial PRIMARY KEY, title varchar, content varchar);
CREATE TABLE tag (id serial PRIMARY KEY, name varchar NOT NULL UNIQUE);
CREATE TABLE user_post (id serial PRIMARY KEY, user_id integer REFERENCES "user" (id),
                        post_id integer REFERENCES post (id));
CREATE TABLE post_comment (id serial PRIMARY KEY, post_id integer REFERENCES post (id),
                           comment_id integer REFERENCES comment (id), UNIQUE (post_id, comment_id));
CREATE TABLE user_tag (id serial PRIMARY KEY, user_id integer REFERENCES "user" (id),
                       tag_id integer REFERENCES tag (id), UNIQUE (user_id, tag_id));
