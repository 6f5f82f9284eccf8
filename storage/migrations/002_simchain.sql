-- The simulated chain's state, so that it outlives the engine as a real chain does.
-- Written by storage/simchain.py from gateways.simulated.chain.ChainChanges rows.
CREATE SCHEMA simchain;

-- One row: the chain's clock, parameters and market.
CREATE TABLE simchain.meta (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    seed           bigint NOT NULL,
    start_time     double precision NOT NULL,
    start_height   bigint NOT NULL,
    block_time_s   double precision NOT NULL,
    valid_blocks   integer NOT NULL,
    fair_prices    jsonb NOT NULL,
    rng_state      text NOT NULL
);

CREATE TABLE simchain.transactions (
    signature               text PRIMARY KEY,
    state                   text NOT NULL
                            CHECK (state IN ('pending', 'confirmed', 'failed', 'dropped')),
    owner                   text NOT NULL,
    pool                    text NOT NULL,
    amount_in               numeric(39, 0) NOT NULL,
    min_amount_out          numeric(39, 0) NOT NULL,
    x_to_y                  boolean NOT NULL,
    last_valid_block_height bigint NOT NULL,
    land_at                 double precision NOT NULL,
    block_height            bigint NOT NULL,
    amount_out              numeric(39, 0) NOT NULL,
    error                   text,
    error_code              text
);

-- Restore puts these back in the pending list.
CREATE INDEX transactions_pending ON simchain.transactions (land_at) WHERE state = 'pending';

CREATE TABLE simchain.pools (
    address  text PRIMARY KEY,
    state    bytea NOT NULL
);

CREATE TABLE simchain.balances (
    owner   text NOT NULL,
    symbol  text NOT NULL,
    amount  numeric(39, 0) NOT NULL,
    PRIMARY KEY (owner, symbol)
);

CREATE TABLE simchain.blockhashes (
    blockhash  text PRIMARY KEY,
    height     bigint NOT NULL
);
