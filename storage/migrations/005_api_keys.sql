-- API keys: only a hash of each key's secret is stored; a revoked key stays for the record.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    account_id   text NOT NULL REFERENCES accounts (account_id),
    scope        text NOT NULL CHECK (scope IN ('trade', 'read')),
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
