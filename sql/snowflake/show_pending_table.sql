-- Cloud services only (no warehouse): the pending table, with its row count ("rows").
-- Parameters: %(name)s (the table's name).
SHOW TABLES LIKE %(name)s IN SCHEMA {schema};
