-- Lifecycle commands are numbered per session. A command's task carries its number and writes
-- only while it is still the session's: a task overtaken by a newer command lands nothing.
ALTER TABLE sessions ADD COLUMN command_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN command INTEGER;
CREATE INDEX tasks_session_open ON tasks (session_id, created_at, id)
    WHERE status IN ('queued', 'running');

-- The workers' wake-up call: only when a task may be claimed (one was queued, or a running one
-- ended, which may free its session's next); never for a claim or a renewed lease.
DROP TRIGGER tasks_inserted;
DROP TRIGGER tasks_status;
CREATE TRIGGER tasks_queued AFTER INSERT ON tasks WHEN NEW.status = 'queued' BEGIN
    INSERT INTO changes (kind) VALUES ('task');
END;
CREATE TRIGGER tasks_freed AFTER UPDATE OF status ON tasks
    WHEN NEW.status <> OLD.status AND (NEW.status = 'queued' OR OLD.status = 'running') BEGIN
    INSERT INTO changes (kind) VALUES ('task');
END;
