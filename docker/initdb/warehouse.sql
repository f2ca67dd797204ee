-- Runs once, in the database `warehouse` (the Airflow examples' target), when the server is
-- created. pgferry creates its target tables and its `pgferry` state schema itself.
CREATE DATABASE dagster_warehouse;
