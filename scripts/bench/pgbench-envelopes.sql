-- One transaction: 9 envelope-sized rows (the envelopes of one message with 5 devices per
-- user) in one INSERT ... SELECT, as Courier's send does. Run by scripts/bench-server.sh.
\set user random(1, 100000)
INSERT INTO bench_envelopes (recipient, device, seq, payload)
SELECT :user, d, nextval('bench_seq'), repeat('x', 256)::bytea FROM generate_series(1, 9) AS d;
