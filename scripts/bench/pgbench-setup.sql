DROP TABLE IF EXISTS bench_envelopes;
DROP SEQUENCE IF EXISTS bench_seq;
CREATE SEQUENCE bench_seq;
CREATE TABLE bench_envelopes (
    recipient BIGINT NOT NULL,
    device    INTEGER NOT NULL,
    seq       BIGINT NOT NULL,
    payload   BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (recipient, device, seq)
);
