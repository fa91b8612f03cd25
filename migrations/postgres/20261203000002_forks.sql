-- A session forked from another: the parent it was forked from and the message it was forked
-- at. A parent's deletion leaves its forks standing (no parent any more).
ALTER TABLE sessions ADD COLUMN parent_id uuid REFERENCES sessions (id) ON DELETE SET NULL;
ALTER TABLE sessions ADD COLUMN fork_seq bigint;
CREATE INDEX sessions_parent ON sessions (parent_id) WHERE parent_id IS NOT NULL;
