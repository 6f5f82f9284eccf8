-- Dry-run orders: routed, built, verified and simulated, never sent; they end `simulated`.
ALTER TABLE orders ADD COLUMN dry_run boolean NOT NULL DEFAULT false;
DROP INDEX orders_open;
CREATE INDEX orders_open ON orders (created_at)
    WHERE status NOT IN ('confirmed', 'failed', 'simulated');
