INSERT INTO publisher (code, name) VALUES ('ABC-DEF_GHI', 'Oxford Press'), ('P-1', 'Tiny Books');
INSERT INTO book (isbn, title, doc, publisher_id) VALUES
  ('978-0-00-001', 'Charlie and the Chocolate Factory',
   '{"firstname": "Roald", "a": {"b": {"c": [1, 2]}}, "x": [{"y": 7}], "num": 5}', 1),
  ('978-0-00-002', '1984', '{"firstname": "George", "num": 1.5}', 2),
  ('978-0-00-003', 'Untitled', NULL, NULL);
INSERT INTO language (code) VALUES ('en-GB'), ('pt-BR'), ('de');
INSERT INTO book_language (book_id, language_id) VALUES (1, 1), (1, 3), (2, 2);
