-- PGSync's examples/social/data.py, shortened: three users, their tags and posts, the posts' comments.
INSERT INTO "user" (name, age, gender) VALUES ('Carla Ferreira Cardoso', 19, 'female'), ('Uwe Fuerst', 58, 'male'),
  ('Otitodilinna Chigolum', 36, 'male');
INSERT INTO post (slug, title) VALUES ('post_1', 'This is the first post'), ('post_2', 'This is the second post'),
  ('post_3', 'This is the third post');
INSERT INTO comment (title, content) VALUES ('Comment 1', 'This is a sample comment for comment 1'),
  ('Comment 2', 'This is a sample comment for comment 2'), ('Comment 3', 'This is a sample comment for comment 3');
INSERT INTO tag (name) VALUES ('Economics'), ('Career'), ('Political');
INSERT INTO user_post (user_id, post_id) VALUES (1, 1), (1, 2), (2, 3);
INSERT INTO post_comment (post_id, comment_id) VALUES (1, 1), (1, 2), (3, 3);
INSERT INTO user_tag (user_id, tag_id) VALUES (1, 1), (1, 2), (2, 3);
