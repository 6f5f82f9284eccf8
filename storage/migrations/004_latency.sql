-- What the venues themselves took, so the time the engine adds can be told apart:
-- each quote's round trip as the gateway measured it, and when the simulated chain
-- accepted each transaction (it lands at land_at).
ALTER TABLE order_quotes ADD COLUMN latency_ms double precision NOT NULL DEFAULT 0;
ALTER TABLE simchain.transactions ADD COLUMN sent_at double precision NOT NULL DEFAULT 0;
