-- The example's schema, created by every app at start (spring.sql.init.mode=always). Idempotent,
-- and serialised by an advisory lock: concurrent CREATE ... IF NOT EXISTS can still collide in
-- PostgreSQL's catalog when several apps start at once.
SELECT pg_advisory_lock(1414);

CREATE TABLE IF NOT EXISTS orders (
    order_id   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity   INT NOT NULL,
    amount     BIGINT NOT NULL,
    status     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS stock (
    product_id TEXT PRIMARY KEY,
    available  INT NOT NULL CHECK (available >= 0)
);

CREATE TABLE IF NOT EXISTS processed_event (
    consumer_group TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);

CREATE TABLE IF NOT EXISTS seen_event (
    id             BIGSERIAL PRIMARY KEY,
    consumer_group TEXT NOT NULL,
    order_id       TEXT,
    event_type     TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition      INT NOT NULL,
    "offset"       BIGINT NOT NULL,
    trace_id       TEXT,
    seen_at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS coupon (
    campaign_id TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, user_id)
);

CREATE TABLE IF NOT EXISTS payment_hourly (
    hour     TIMESTAMPTZ PRIMARY KEY,
    payments BIGINT NOT NULL,
    amount   BIGINT NOT NULL
);

SELECT pg_advisory_unlock(1414);
