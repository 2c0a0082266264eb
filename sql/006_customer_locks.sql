-- One row per customer, locked (SELECT ... FOR UPDATE) by every writer for the customers whose
-- funnel it recomputes, in customer-key order, until its transaction commits
-- (store/funnel.py, lock_customers). Two writers touching one customer (a sensor's drain run
-- and a `funnel drain` on the same shard, a backfill of past days, a replay) recompute it one
-- after the other, each from everything the other committed, so the last to commit never
-- writes a funnel that misses the other's messages; writers of other customers do not wait.
-- Row locks, not advisory locks: a batch may touch tens of thousands of customers, more than
-- the shared lock table holds (max_locks_per_transaction).
CREATE TABLE IF NOT EXISTS customer_locks (
    customer_key text PRIMARY KEY
);
