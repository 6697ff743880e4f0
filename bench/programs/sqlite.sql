-- SQL for `compare`: sqlite3 on an in-memory database, so its pages and
-- its sorter come from the allocator under test. ROWS is replaced by the
-- harness with the row count for its scale. The output is the checksum.
CREATE TABLE grp(id INTEGER PRIMARY KEY, label TEXT);
CREATE TABLE item(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, price REAL);
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999)
INSERT INTO grp SELECT i, 'group-' || i FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ROWS)
INSERT INTO item SELECT i, (i * 7) % 1000, printf('name-%08d-%s', (i * 7919) % ROWS, hex(i * 31)), ((i * 37) % 10007) / 100.0 FROM n;
CREATE INDEX item_name ON item(name);
CREATE INDEX item_grp ON item(grp);
SELECT count(*), round(sum(price), 2) FROM item;
SELECT g.label, count(*), round(sum(i.price), 2) FROM item i JOIN grp g ON g.id = i.grp GROUP BY g.id ORDER BY 3 DESC, 1 LIMIT 5;
SELECT name FROM item ORDER BY price DESC, name LIMIT 3;
SELECT count(DISTINCT substr(name, 6, 4)) FROM item;
DELETE FROM item WHERE id % 3 = 0;
UPDATE item SET name = name || '-x' WHERE grp < 100;
SELECT count(*), sum(length(name)) FROM item;
SELECT a.grp, count(*) FROM item a JOIN item b ON a.name = b.name AND a.id <> b.id GROUP BY a.grp ORDER BY 2 DESC, 1 LIMIT 3;
SELECT group_concat(name, ',') FROM (SELECT name FROM item ORDER BY name DESC LIMIT 5);
