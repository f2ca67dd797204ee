-- Runs once, in the database `source`, when the source server is created.
-- The standard benchmark workload, 100,000 rows: `pgferry demo` and `make bench` use it too.
\set rows 100000
\i /pgferry/workload.sql

-- The Airflow examples' tables.
CREATE DATABASE airflow_source;
\c airflow_source
\i /pgferry/airflow_seed.sql

-- The Dagster examples' tables.
CREATE DATABASE dagster_source;
\c dagster_source
\i /pgferry/dagster_seed.sql
