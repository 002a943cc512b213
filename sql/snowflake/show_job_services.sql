-- The ML Jobs (job services) of the schema whose name matches %(pattern)s (a LIKE pattern);
-- cloud services only, no warehouse.
SHOW JOB SERVICES LIKE %(pattern)s IN SCHEMA {schema};
