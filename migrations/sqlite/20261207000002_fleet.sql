-- The fleet: every process that runs fleet work is a core with a lease, renewed by its
-- heartbeat; what it holds (a role, a live session's event stream) is held under its lease at an
-- epoch, and each write made under it is checked against the epoch in the same transaction.
-- (The `singletons` table of the first schema is no longer used.)
CREATE TABLE cores (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    fleet       INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE roles (
    name   TEXT PRIMARY KEY,
    core   TEXT NOT NULL,
    epoch  INTEGER NOT NULL
);

CREATE TABLE session_owners (
    session_id  TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    core        TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    since       INTEGER NOT NULL
);
CREATE INDEX session_owners_core ON session_owners (core);
