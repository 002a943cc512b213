-- Tables created later (by setup, as their owner) are readable and writable by the job role too.
-- A future grant needs MANAGE GRANTS (ACCOUNTADMIN has it; SYSADMIN does not by default), so
-- setup runs this as --admin-role.
GRANT SELECT, INSERT, UPDATE, DELETE ON FUTURE TABLES IN SCHEMA {schema} TO ROLE {role};
