-- PGSync's examples/airbnb/schema.py (SQLAlchemy models) as SQL, with a few rows in the spirit of its
-- data.py: users book places (in a city, in a country, offered by a host), a booking may have a review.
CREATE TABLE "user" (id serial PRIMARY KEY, email varchar(256) NOT NULL UNIQUE);
CREATE TABLE host (id serial PRIMARY KEY, email varchar(256) NOT NULL UNIQUE);
CREATE TABLE country (id serial PRIMARY KEY, name varchar(256) NOT NULL, country_code varchar(256) NOT NULL,
                      UNIQUE (name, country_code));
CREATE TABLE city (id serial PRIMARY KEY, name varchar(256) NOT NULL, country_id integer REFERENCES country (id),
                   UNIQUE (name, country_id));
CREATE TABLE place (id serial PRIMARY KEY, host_id integer REFERENCES host (id), address varchar(256) NOT NULL,
                    city_id integer REFERENCES city (id), UNIQUE (host_id, address, city_id));
CREATE TABLE booking (id serial PRIMARY KEY, user_id integer REFERENCES "user" (id),
                      place_id integer REFERENCES place (id), start_date timestamp, end_date timestamp,
                      price_per_night double precision DEFAULT 0, num_nights integer NOT NULL DEFAULT 1,
                      UNIQUE (user_id, place_id, start_date));
CREATE TABLE review (id serial PRIMARY KEY, booking_id integer REFERENCES booking (id) UNIQUE,
                     rating smallint, review_body text);
