-- Least-privilege Postgres roles for runwatch.
--
--   runwatch_owner   owns the schema objects; used only by `runwatch migrate`.
--   runwatch_worker  what `runwatch run --no-migrate` (and publish, purge, repo-id) needs:
--                    SELECT, INSERT, UPDATE, DELETE on the tables and USAGE on the sequences.
--                    No DDL, no TRUNCATE; the migration history read-only.
--
-- Run it as a superuser (or a role with CREATEROLE that may grant on the database),
-- connected to runwatch's own database, BEFORE the first `runwatch migrate`:
--
--   createdb runwatch                                   # or CREATE DATABASE runwatch;
--   psql -d runwatch -f deploy/postgres/roles.sql       # -v owner=… -v worker=… to rename
--   psql -d runwatch -c '\password runwatch_owner'      # passwords: never on a command line
--   psql -d runwatch -c '\password runwatch_worker'
--   DATABASE_URL=postgres://runwatch_owner@db/runwatch runwatch migrate    # create_if_missing
--                                                                          # needs CREATEDB: set
--                                                                          # it false, or create
--                                                                          # the db as above
--   DATABASE_URL=postgres://runwatch_worker@db/runwatch runwatch run --no-migrate
--
-- Re-run it after each migration (it is idempotent): it grants on tables created by hand
-- and keeps `_sqlx_migrations` read-only for the worker. Tables created by runwatch_owner are
-- granted to the worker automatically (ALTER DEFAULT PRIVILEGES). The grants cover schema
-- `public` of this database: give runwatch a database of its own.
-- Requires psql (\if, \gexec, \gset): PostgreSQL 10 or later; tested with 15.

\set ON_ERROR_STOP on
\if :{?owner}
\else
  \set owner runwatch_owner
\endif
\if :{?worker}
\else
  \set worker runwatch_worker
\endif

SELECT current_database() AS db \gset

-- Roles (login, no password yet; no superuser, createdb, createrole or replication).
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', :'worker')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'worker') \gexec

GRANT CONNECT ON DATABASE :"db" TO :"owner", :"worker";

-- Only the owner may create objects in the schema (PostgreSQL 15 already revokes CREATE
-- from PUBLIC; older versions grant it, hence the REVOKE).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"owner";
GRANT USAGE ON SCHEMA public TO :"worker";

-- Data access for the worker, on future tables of the owner ...
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"worker";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT USAGE ON SEQUENCES TO :"worker";
-- ... and on the tables that exist already (a re-run after a migration).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"worker";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO :"worker";

-- The worker may read the migration history (`run --no-migrate` refuses a schema that is
-- behind the binary, naming the missing migration), never write it.
SELECT format('REVOKE ALL ON TABLE public._sqlx_migrations FROM %I', :'worker')
 WHERE to_regclass('public._sqlx_migrations') IS NOT NULL \gexec
SELECT format('GRANT SELECT ON TABLE public._sqlx_migrations TO %I', :'worker')
 WHERE to_regclass('public._sqlx_migrations') IS NOT NULL \gexec
