-- Orders, their event history, every quote considered, and every signed swap transaction.
CREATE TABLE accounts (
    account_id  text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO accounts (account_id) VALUES ('default') ON CONFLICT DO NOTHING;

CREATE TABLE orders (
    order_id        uuid PRIMARY KEY,
    account_id      text NOT NULL REFERENCES accounts (account_id),
    client_order_id text,
    order_type      text NOT NULL,
    input_mint      text NOT NULL,
    output_mint     text NOT NULL,
    amount_in       numeric(39, 0) NOT NULL CHECK (amount_in > 0),
    slippage_bps    integer NOT NULL CHECK (slippage_bps BETWEEN 0 AND 10000),
    status          text NOT NULL,
    attempt         integer NOT NULL DEFAULT 0,
    seq             integer NOT NULL DEFAULT 0,
    venue           text,
    signature       text,
    amount_out      numeric(39, 0),
    price           numeric,
    failure_reason  text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT orders_client_order_id_unique UNIQUE (account_id, client_order_id)
);

CREATE INDEX orders_by_account_created ON orders (account_id, created_at DESC, order_id DESC);
CREATE INDEX orders_by_account_status ON orders (account_id, status, created_at DESC, order_id DESC);
CREATE INDEX orders_open ON orders (created_at) WHERE status NOT IN ('confirmed', 'failed');

CREATE TABLE order_events (
    order_id    uuid NOT NULL REFERENCES orders (order_id),
    seq         integer NOT NULL,
    status      text NOT NULL,
    at          timestamptz NOT NULL,
    attempt     integer NOT NULL,
    venue       text,
    quotes      jsonb,
    signature   text,
    amount_out  numeric(39, 0),
    price       numeric,
    error       text,
    error_class text,
    PRIMARY KEY (order_id, seq)
);

CREATE TABLE order_quotes (
    order_id         uuid NOT NULL REFERENCES orders (order_id),
    attempt          integer NOT NULL,
    venue            text NOT NULL,
    pool             text NOT NULL,
    amount_in        numeric(39, 0) NOT NULL,
    amount_out       numeric(39, 0) NOT NULL,
    fee              numeric(39, 0) NOT NULL,
    fee_bps          numeric NOT NULL,
    price_impact_bps integer NOT NULL,
    chosen           boolean NOT NULL,
    quoted_at        timestamptz NOT NULL,
    PRIMARY KEY (order_id, attempt, venue)
);

CREATE TABLE swap_transactions (
    signature               text PRIMARY KEY,
    order_id                uuid NOT NULL REFERENCES orders (order_id),
    attempt                 integer NOT NULL,
    venue                   text NOT NULL,
    tx_bytes                bytea NOT NULL,
    last_valid_block_height bigint NOT NULL,
    min_amount_out          numeric(39, 0) NOT NULL,
    status                  text NOT NULL DEFAULT 'signed',
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX swap_transactions_by_order ON swap_transactions (order_id, created_at);
