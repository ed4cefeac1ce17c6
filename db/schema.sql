-- serverlab schema: idempotent, safe to apply on every `make up` and test session.
-- World and Fortune follow the TechEmpower Framework Benchmarks (unquoted names fold to lower case).
CREATE TABLE IF NOT EXISTS world (
    id           integer PRIMARY KEY,
    randomnumber integer NOT NULL
);

CREATE TABLE IF NOT EXISTS fortune (
    id      integer PRIMARY KEY,
    message varchar(2048) NOT NULL
);

-- Lab table for the durable-write endpoint. A unique idempotency key makes a retried
-- POST return the first order instead of writing a second row.
CREATE TABLE IF NOT EXISTS orders (
    id              bigserial PRIMARY KEY,
    item            text        NOT NULL,
    qty             integer     NOT NULL CHECK (qty > 0),
    idempotency_key text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
