-- Example source data for dagster_defs (run it in the source database):
--   psql "$PGFERRY_SOURCE_DSN" -f dagster_defs/seed.sql
-- The tests run it too, and assert exactly what the example assets load from it.

DROP TABLE IF EXISTS public.customers, public.events, public.orders;

CREATE TABLE public.customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    signed_up_at timestamptz NOT NULL
);
INSERT INTO public.customers
SELECT g, '  Customer ' || g || '  ', 'Customer' || g || '@Example.' || (ARRAY['COM', 'Org'])[g % 2 + 1],
       timestamptz '2023-06-01 00:00+00' + g * interval '1 day'
FROM generate_series(1, 40) AS g;

-- Three days of events, 96 a day (one every 15 minutes), from 2024-01-01 UTC.
CREATE TABLE public.events (
    id bigint PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    kind text NOT NULL,
    amount numeric(10,2)
);
INSERT INTO public.events
SELECT g, timestamptz '2024-01-01 00:00+00' + (g - 1) * interval '15 minutes',
       (ARRAY['view', 'click', 'buy'])[g % 3 + 1], g * 0.25
FROM generate_series(1, 288) AS g;

CREATE TABLE public.orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    status text NOT NULL,
    total numeric(12,2) NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO public.orders
SELECT g, g % 40 + 1, (ARRAY['new', 'paid', 'shipped', 'cancelled'])[g % 4 + 1], g * 1.5,
       timestamptz '2024-01-01 00:00+00' + g * interval '1 hour'
FROM generate_series(1, 1000) AS g;
