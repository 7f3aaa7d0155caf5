-- Creates the databases and their owners for the compose stack.
--
-- Run by the postgres image's entrypoint (docker-entrypoint-initdb.d) exactly
-- once, when the data volume is empty; later password changes must be made
-- with ALTER ROLE, not by editing this file.
--
-- Passwords are not written here: psql's \getenv reads them from the
-- container environment (POSTGRES_IMPRUN_PASSWORD, POSTGRES_TEMPORAL_PASSWORD; see
-- docker-compose.yml). \getenv needs psql 15+; the stack runs postgres:16.

\set ON_ERROR_STOP on

\getenv imprun_password POSTGRES_IMPRUN_PASSWORD
\getenv temporal_password POSTGRES_TEMPORAL_PASSWORD

\if :{?imprun_password}
\else
  \echo 'init.sql: POSTGRES_IMPRUN_PASSWORD is not set in the postgres container'
  SELECT 1/0 AS imprun_db_password_missing;
\endif
\if :{?temporal_password}
\else
  \echo 'init.sql: POSTGRES_TEMPORAL_PASSWORD is not set in the postgres container'
  SELECT 1/0 AS temporal_db_password_missing;
\endif

-- imprun: one owner role; `api migrate up` creates the schema as that role.
CREATE ROLE imprun LOGIN PASSWORD :'imprun_password';
CREATE DATABASE imprun OWNER imprun ENCODING 'UTF8';

-- Temporal: persistence and (SQL) visibility stores. Both databases are
-- created here, so temporal auto-setup runs with SKIP_DB_CREATE=true and
-- only applies its schema.
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal ENCODING 'UTF8';
CREATE DATABASE temporal_visibility OWNER temporal ENCODING 'UTF8';

-- Each application sees only its own databases: no process reads another
-- one's tables behind its back. Owners keep CONNECT through ownership.
REVOKE ALL ON DATABASE imprun FROM PUBLIC;
REVOKE ALL ON DATABASE temporal FROM PUBLIC;
REVOKE ALL ON DATABASE temporal_visibility FROM PUBLIC;
