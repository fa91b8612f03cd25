-- agentdeck's schema on SQLite (the embedded default). Times are unix milliseconds (UTC),
-- ids are lowercase hyphenated UUID text, JSON is text.

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    harness     TEXT NOT NULL,
    model       TEXT NOT NULL,
    spec        TEXT NOT NULL,
    present     INTEGER NOT NULL DEFAULT 1,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY,
    agent_id            TEXT NOT NULL,
    team                TEXT NOT NULL,
    title               TEXT NOT NULL,
    status              TEXT NOT NULL,
    phase               TEXT NOT NULL,
    phase_detail        TEXT,
    runtime             TEXT,
    sandbox_ref         TEXT,
    harness_session_id  TEXT,
    failure_reason      TEXT,
    env                 TEXT NOT NULL DEFAULT '{}',
    last_message_seq    INTEGER NOT NULL DEFAULT 0,
    last_event_seq      INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_activity_at    INTEGER NOT NULL,
    idle_deadline       INTEGER,
    stopped_at          INTEGER
);
CREATE INDEX sessions_team_id ON sessions (team, id DESC);
CREATE INDEX sessions_status ON sessions (status);
CREATE INDEX sessions_agent ON sessions (agent_id);

CREATE TABLE messages (
    session_id          TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq                 INTEGER NOT NULL,
    id                  TEXT NOT NULL UNIQUE,
    role                TEXT NOT NULL,
    status              TEXT NOT NULL,
    parts               TEXT NOT NULL DEFAULT '[]',
    error               TEXT,
    harness_message_id  TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE events (
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    session_id    TEXT REFERENCES sessions (id) ON DELETE CASCADE,
    payload       TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    run_at        INTEGER NOT NULL,
    lease_until   INTEGER,
    locked_by     TEXT,
    completed_by  TEXT,
    last_error    TEXT,
    dedupe_key    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX tasks_due ON tasks (status, run_at);
CREATE INDEX tasks_session ON tasks (session_id);
CREATE UNIQUE INDEX tasks_dedupe ON tasks (dedupe_key) WHERE status = 'queued';

-- Singleton roles held by a renewable lease (SQLite has no advisory locks).
CREATE TABLE singletons (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- The change feed across processes: every write leaves a row here in its own transaction;
-- each store polls for new rows when PRAGMA data_version says the file changed.
CREATE TABLE changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    session_id  TEXT,
    seq         INTEGER,
    at          INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
);

CREATE TRIGGER sessions_inserted AFTER INSERT ON sessions BEGIN
    INSERT INTO changes (kind, session_id) VALUES ('session', NEW.id);
END;
CREATE TRIGGER sessions_updated AFTER UPDATE ON sessions BEGIN
    INSERT INTO changes (kind, session_id) VALUES ('session', NEW.id);
END;
CREATE TRIGGER messages_inserted AFTER INSERT ON messages BEGIN
    INSERT INTO changes (kind, session_id, seq) VALUES ('message', NEW.session_id, NEW.seq);
END;
CREATE TRIGGER messages_updated AFTER UPDATE ON messages BEGIN
    INSERT INTO changes (kind, session_id, seq) VALUES ('message', NEW.session_id, NEW.seq);
END;
CREATE TRIGGER events_inserted AFTER INSERT ON events BEGIN
    INSERT INTO changes (kind, session_id, seq) VALUES ('event', NEW.session_id, NEW.seq);
END;
CREATE TRIGGER tasks_inserted AFTER INSERT ON tasks BEGIN
    INSERT INTO changes (kind) VALUES ('task');
END;
CREATE TRIGGER tasks_status AFTER UPDATE OF status ON tasks BEGIN
    INSERT INTO changes (kind) VALUES ('task');
END;
CREATE TRIGGER agents_inserted AFTER INSERT ON agents BEGIN
    INSERT INTO changes (kind) VALUES ('agents');
END;
CREATE TRIGGER agents_updated AFTER UPDATE ON agents BEGIN
    INSERT INTO changes (kind) VALUES ('agents');
END;
