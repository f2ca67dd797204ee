-- Runs once, in the database `airflow`, when the metadata server is created.
CREATE DATABASE dagster;
