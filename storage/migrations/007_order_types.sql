-- Limit and stop orders, time in force, cancel and expiry (issue 16). Prices are output per
-- input in token units. A market order has no prices and no time in force.
ALTER TABLE orders
    ADD COLUMN limit_price   numeric CHECK (limit_price > 0),
    ADD COLUMN trigger_price numeric CHECK (trigger_price > 0),
    ADD COLUMN time_in_force text CHECK (time_in_force IN ('gtc', 'gtt', 'ioc')),
    ADD COLUMN expires_at    timestamptz,
    ADD COLUMN triggered_at  timestamptz,
    ADD CONSTRAINT orders_gtt_expires CHECK ((time_in_force = 'gtt') = (expires_at IS NOT NULL));
DROP INDEX orders_open;
CREATE INDEX orders_open ON orders (created_at)
    WHERE status NOT IN ('confirmed', 'failed', 'simulated', 'cancelled', 'expired');
