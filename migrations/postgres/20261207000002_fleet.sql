-- The fleet: every process that runs fleet work (a `serve`, a `worker`, a cockpit on its own) is
-- a core with a lease, renewed by its heartbeat; what it holds (a role, the event stream of a
-- live session) is held under its lease at an epoch. A core that stops renewing (killed, frozen,
-- cut off) loses everything within the lease, whatever its connection does; when it comes back
-- it starts a new epoch, so nothing it held before counts, and each write it makes under a
-- role or a session is checked against the epoch in the same transaction (fenced).
CREATE TABLE cores (
    id          text PRIMARY KEY,
    kind        text NOT NULL,
    -- Whether it runs fleet work now (a cockpit beside a live `serve` does not).
    fleet       boolean NOT NULL,
    epoch       bigint NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    renewed_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- The fleet's singleton roles (the reconciler, the idle reaper).
CREATE TABLE roles (
    name   text PRIMARY KEY,
    core   text NOT NULL,
    epoch  bigint NOT NULL
);

-- Who follows each live session's event stream (ingest).
CREATE TABLE session_owners (
    session_id  uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    core        text NOT NULL,
    epoch       bigint NOT NULL,
    since       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_owners_core ON session_owners (core);

-- The sessions whose stream is followed, found without reading their rows.
CREATE INDEX sessions_live ON sessions (id)
    WHERE status IN ('ready', 'idle', 'busy') AND harness_session_id IS NOT NULL
      AND sandbox_ref IS NOT NULL;
