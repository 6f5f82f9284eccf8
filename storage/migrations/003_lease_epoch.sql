-- Fencing for execution leases: every lease taken on an order bumps its epoch, and every
-- write an executor makes is refused unless it still holds the newest epoch.
ALTER TABLE orders ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;
