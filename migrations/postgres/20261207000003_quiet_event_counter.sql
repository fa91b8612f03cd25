-- A session's raw-event counter moves with every batch of harness events ingest writes (a few
-- times a second per streaming session); the events' own notice already says so. The session's
-- notice is kept for what the session's readers see: an update that moves only that counter
-- (it sets no updated_at, status or phase) is not announced as a change of the session.
DROP TRIGGER sessions_changed ON sessions;
CREATE TRIGGER sessions_inserted AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION agentdeck_notify_session();
CREATE TRIGGER sessions_changed AFTER UPDATE ON sessions
    FOR EACH ROW
    WHEN (OLD.last_event_seq = NEW.last_event_seq
          OR OLD.updated_at IS DISTINCT FROM NEW.updated_at
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.phase IS DISTINCT FROM NEW.phase)
    EXECUTE FUNCTION agentdeck_notify_session();
