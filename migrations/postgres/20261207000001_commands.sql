-- Lifecycle commands are numbered per session. A command's task carries its number and writes
-- only while it is still the session's: a task overtaken by a newer command lands nothing.
ALTER TABLE sessions ADD COLUMN command_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN command bigint;
-- A session's open tasks, for running them one at a time and in order.
CREATE INDEX tasks_session_open ON tasks (session_id, created_at, id)
    WHERE status IN ('queued', 'running');

-- The workers' wake-up call: a notice only when a task may be claimed (one was queued, or a
-- running one ended, which may free its session's next). Never for a claim, a renewed lease or
-- an update that changed no row: an idle worker's own statements must wake nobody, or workers
-- wake each other in a loop.
DROP TRIGGER tasks_changed ON tasks;
CREATE TRIGGER tasks_queued AFTER INSERT ON tasks
    FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION agentdeck_notify_task();
CREATE TRIGGER tasks_freed AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
                       AND (NEW.status = 'queued' OR OLD.status = 'running'))
    EXECUTE FUNCTION agentdeck_notify_task();
