-- Example source data for the DAGs in dags/ (run it in the source database):
--   psql "$SOURCE_DSN" -f dags/seed.sql
-- The tests seed their source database with it, and docker compose seeds `airflow_source`.
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL,
                        country text, signed_up_at timestamptz NOT NULL);
INSERT INTO customers
SELECT g, 'First' || g || ' Last' || g, '  User' || g || '@Example.COM ',
       (ARRAY['FR', 'DE', 'NL'])[1 + g % 3], timestamptz '2024-01-01' + g * interval '1 minute'
FROM generate_series(1, 2000) g;

CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL,
                     amount numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL);
INSERT INTO orders
SELECT g, 1 + g % 2000, g * 1.25, timestamptz '2024-01-01' + (g / 7) * interval '1 second'
FROM generate_series(1, 3000) g;

CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, payload jsonb,
                     at timestamptz NOT NULL);
INSERT INTO events
SELECT g, (ARRAY['click', 'view', 'buy'])[1 + g % 3], jsonb_build_object('n', g),
       timestamptz '2024-01-01' + g * interval '1 second'
FROM generate_series(1, 5000) g;
