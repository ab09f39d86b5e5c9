-- One booking per user (PGSync's one_to_one user -> booking makes one object of it), one user without any.
INSERT INTO "user" (email) VALUES ('stephanie.miller@aol.com'), ('nancy.gaines@ibm.com'), ('brandon86@yahoo.com');
INSERT INTO host (email) VALUES ('kermit@muppet-labs.inc'), ('bert@sesame.street');
INSERT INTO country (name, country_code) VALUES ('Philippines', 'PH'), ('Portugal', 'PT');
INSERT INTO city (name, country_id) VALUES ('Manila', 1), ('Lisbon', 2);
INSERT INTO place (host_id, address, city_id) VALUES (1, 'Quezon Boulevard', 1), (2, 'Rua da Prata', 2);
INSERT INTO booking (user_id, place_id, start_date, end_date, price_per_night, num_nights) VALUES
  (1, 1, '2024-03-01 14:00', '2024-03-04 11:00', 85.5, 3),
  (2, 2, '2024-05-10 15:00', '2024-05-12 10:00', 120, 2);
INSERT INTO review (booking_id, rating, review_body) VALUES (1, 5, 'Lovely stay');
