//! Ingest: follows each live session's harness event bus and keeps the store current.
//!
//! The live sessions are shared among the cores that run fleet work, each following its fair
//! share (the followed sessions over the working cores, rounded up): a new core takes part of the
//! load at its first look, and the sessions of a core that stops (killed, frozen, cut off) are
//! taken by the others once its lease runs out. A session is held under its core's lease and
//! every write of its pump is fenced by it, so a core that wakes after losing it writes nothing.
//! A pump subscribes to the harness's bus, then catches up from the harness's full message list,
//! so a pump that starts late (or after the session moved to another core) misses nothing. Every
//! event is appended to the session's raw event log (in batches); messages and their parts are
//! kept current as they stream; text deltas reach in-process subscribers at once and the store
//! every [`FLUSH_EVERY`]; the stored message is complete when the turn ends.

use super::Core;
use super::ingest_writes::IngestWrites;
use crate::harness::{HarnessEvent, HarnessMessage, MessageInfo, Update};
use crate::model::Fence;
use crate::model::{
    AskStatus, MessagePatch, MessageRole, MessageStatus, NewEvent, NewMessage, Part, SessionPatch,
    SessionStatus, Transition,
};
use crate::store::{Change, IngestWrite};
use futures::FutureExt;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// How often streamed text is written to the store (and raw events flushed).
const FLUSH_EVERY: Duration = Duration::from_millis(150);
/// How long a pump with nothing to flush waits for its harness before looking again.
const IDLE_WAIT: Duration = Duration::from_secs(3600);
/// How long a prompt the harness accepted may be missing from its conversation before the turn
/// it opened is taken as lost. opencode writes the user's message after `prompt_async` returns
/// (0.2 s later and more on a first prompt, which does its one-time work first): a catch-up in
/// between sees no open turn, and must not call the busy session idle.
const ECHO_GRACE: Duration = Duration::from_secs(60);
/// Raw events written at most per batch.
const BATCH: usize = 200;
/// Writer lanes (commits that may overlap) of a core on a store that takes concurrent writers.
const WRITER_LANES: usize = 3;
/// How often the share of live sessions is looked at when nothing happens…
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// …and at most, when sessions change.
const LOOK_AT_MOST: Duration = Duration::from_millis(250);

/// Streamed text as it arrives (see `model::LiveDelta`).
pub use crate::model::LiveDelta;

/// A pump running for a session this core holds, at the epoch it holds it.
struct Running {
    epoch: i64,
    stop: watch::Sender<bool>,
    join: JoinHandle<()>,
}

/// Shares the followed sessions with the other working cores and runs a pump for each of this
/// core's, until `shutdown`; then gives them up.
pub(crate) async fn run(core: Core, mut shutdown: watch::Receiver<bool>) {
    let publisher = tokio::spawn(super::live::publish(core.clone(), shutdown.clone()));
    let lanes = match core.store().backend() {
        crate::store::Backend::Postgres => WRITER_LANES,
        // One writer at a time there anyway.
        crate::store::Backend::Sqlite => 1,
    };
    let writes = IngestWrites::start(core.store().clone(), lanes);
    let mut pumps: HashMap<Uuid, Running> = HashMap::new();
    let mut feed = core.subscribe();
    let mut standing = core.watch_standing();
    let mut last_look = Instant::now() - LOOK_EVERY;
    loop {
        if let Err(err) = look(&core, &writes, &mut pumps).await {
            tracing::warn!(%err, "cannot share the live sessions this pass");
        }
        last_look = last_look.max(Instant::now());
        // Looked at again on a timer, when this core's standing changes, and soon after a
        // session it does not follow changes (it may have come up); never more often than
        // LOOK_AT_MOST.
        let wake = async {
            loop {
                match feed.next().await {
                    Some(Change::Session(id)) if !pumps.contains_key(&id) => break,
                    Some(Change::Resync) | None => break,
                    Some(_) => {}
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(last_look + LOOK_EVERY) => {}
            _ = wake => {
                tokio::time::sleep_until(last_look + LOOK_AT_MOST).await;
            }
            _ = standing.changed() => {}
            _ = shutdown.changed() => break,
        }
        last_look = Instant::now();
    }
    let held: Vec<Uuid> = pumps.keys().copied().collect();
    stop_pumps(&mut pumps, &held).await;
    if let Err(err) = core.store().release_sessions(core.instance(), &held).await {
        tracing::debug!(%err, "cannot give the followed sessions up; the lease will run out");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), publisher).await;
}

/// Asks the pumps of `ids` to write what they have and stop, and waits for them (a moment).
async fn stop_pumps(pumps: &mut HashMap<Uuid, Running>, ids: &[Uuid]) {
    let stopping: Vec<Running> = ids.iter().filter_map(|id| pumps.remove(id)).collect();
    for running in &stopping {
        let _ = running.stop.send(true);
    }
    for running in stopping {
        let abort = running.join.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), running.join)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// One look: this core's fair share of the followed sessions, taken or given up, and a pump for
/// each it holds.
async fn look(
    core: &Core,
    writes: &IngestWrites,
    pumps: &mut HashMap<Uuid, Running>,
) -> super::Result<()> {
    let me = core.instance().to_string();
    let Some(standing) = core.standing().filter(|s| s.fleet) else {
        // Not working (a cockpit beside a live serve, or its lease is in doubt): others follow.
        let held: Vec<Uuid> = pumps.keys().copied().collect();
        stop_pumps(pumps, &held).await;
        if !held.is_empty() {
            core.store().release_sessions(&me, &held).await?;
        }
        return Ok(());
    };
    // Pumps of an older epoch hold nothing any more.
    let stale: Vec<Uuid> = pumps
        .iter()
        .filter(|(_, r)| r.epoch != standing.epoch || r.join.is_finished())
        .map(|(id, _)| *id)
        .collect();
    stop_pumps(pumps, &stale).await;

    let followed = core
        .store()
        .followed_sessions(core.runtime().kind())
        .await?;
    let working = core
        .store()
        .list_cores()
        .await?
        .iter()
        .filter(|c| c.fleet)
        .count();
    let share = super::fleet::fair_share(followed.len(), working);
    let mut mine: Vec<Uuid> = followed
        .iter()
        .filter(|(_, owner)| owner.as_deref() == Some(me.as_str()))
        .map(|(id, _)| *id)
        .collect();
    // More than a fair share (a core joined): give the newest up, for others to take. One over
    // is kept, so that shares that do not divide evenly do not move back and forth.
    if mine.len() > share + 1 {
        mine.sort();
        let give: Vec<Uuid> = mine.split_off(share);
        tracing::info!(
            count = give.len(),
            share,
            "giving sessions up to the other cores"
        );
        stop_pumps(pumps, &give).await;
        core.store().release_sessions(&me, &give).await?;
    } else if mine.len() < share {
        let free: Vec<Uuid> = followed
            .iter()
            .filter(|(_, owner)| owner.is_none())
            .map(|(id, _)| *id)
            .take(share - mine.len())
            .collect();
        if !free.is_empty() {
            let taken = core
                .store()
                .take_sessions(&me, standing.epoch, &free)
                .await?;
            tracing::debug!(count = taken.len(), share, "took sessions to follow");
            mine.extend(taken);
        }
    }
    // Sessions no longer held (or no longer live) stop; each held one has its pump.
    let gone: Vec<Uuid> = pumps
        .keys()
        .filter(|id| !mine.contains(id))
        .copied()
        .collect();
    stop_pumps(pumps, &gone).await;
    for id in mine {
        pumps.entry(id).or_insert_with(|| {
            let fence = Fence::Session {
                id,
                core: me.clone(),
                epoch: standing.epoch,
            };
            let fenced = core.fenced(fence.clone());
            let writer = Writer {
                fence,
                writes: writes.clone(),
            };
            let (stop, stopped) = watch::channel(false);
            Running {
                epoch: standing.epoch,
                stop,
                join: tokio::spawn(pump(fenced, id, writer, stopped)),
            }
        });
    }
    Ok(())
}

/// Brings the session's asks in line with what the harness waits for: what was asked while
/// nobody listened is recorded, and what we have as waiting that the harness no longer has (it
/// restarted, or the turn ended) is settled as gone.
async fn catch_up_asks(
    core: &Core,
    id: Uuid,
    endpoint: &crate::harness::Endpoint,
    harness_session: &str,
) {
    let waiting = match core.harness().pending_asks(endpoint).await {
        Ok(all) => all,
        Err(err) => {
            tracing::debug!(session = %id, %err, "cannot list what the harness waits for");
            return;
        }
    };
    let mut open = HashSet::new();
    for (session, ask) in waiting {
        if session != harness_session {
            continue;
        }
        open.insert(ask.id.clone());
        super::write_aside("recording what the agent asks", id, || {
            core.store().record_ask(id, &ask)
        })
        .await;
    }
    let stored = match core.store().list_asks(id, true).await {
        Ok(stored) => stored,
        Err(err) => {
            tracing::warn!(session = %id, %err, "cannot read the session's asks");
            return;
        }
    };
    for ask in stored.into_iter().filter(|a| !open.contains(&a.id)) {
        super::write_aside("settling an ask the agent no longer waits for", id, || {
            core.store().settle_ask(id, &ask.id, AskStatus::Gone, None)
        })
        .await;
    }
}

/// Hands a session's warm sandbox its claim again, if it is one.
async fn reclaim(
    core: &Core,
    session: &crate::model::Session,
    sandbox: &crate::runtime::SandboxRef,
) {
    let Some(agent) = core.config().agents.get(&session.agent_id).cloned() else {
        return;
    };
    if let Err(err) = core.hand_over_again(session.id, &agent, sandbox).await {
        tracing::debug!(session = %session.id, %err, "cannot hand the claim over again yet");
    }
}

/// Follows one session's harness until the session is no longer live, it is asked to `stop`
/// (it writes what it has first), or its writes are refused because this core no longer holds
/// the session (then at once).
async fn pump(core: Core, id: Uuid, writer: Writer, mut stop: watch::Receiver<bool>) {
    let mut state = match State::load(&core, id, writer).await {
        Ok(state) => state,
        Err(err) => {
            tracing::warn!(session = %id, %err, "cannot start following the harness");
            return;
        }
    };
    let mut backoff = Duration::from_millis(250);
    loop {
        if *stop.borrow() || state.lost {
            return;
        }
        let session = match core.store().get_session(id).await {
            Ok(Some(s)) if s.status.is_live() => s,
            _ => return,
        };
        let (Some(harness_session), Some(sandbox)) = (
            session.harness_session_id.clone(),
            Core::sandbox_of(&session),
        ) else {
            return;
        };
        let url = match core.runtime().health(&sandbox).await {
            Ok(h) => h.endpoint,
            Err(_) => None,
        };
        let endpoint = match url {
            Some(url) => core.harness_endpoint(id, url).await.ok(),
            None => None,
        };
        let Some(endpoint) = endpoint else {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        };
        let mut events = match core.harness().events(&endpoint).await {
            Ok(events) => events,
            Err(err) => {
                if matches!(err, crate::harness::HarnessError::Refused(_)) {
                    // Refused at the door: a warm pool's sandbox whose pod was made again
                    // (an eviction, a drain) waits for its session's claim.
                    reclaim(&core, &session, &sandbox).await;
                }
                tracing::debug!(session = %id, %err, "harness bus not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        // Subscribed first, then caught up: nothing falls in between.
        match core.harness().messages(&endpoint, &harness_session).await {
            Ok(messages) => {
                if let Err(err) = state.catch_up(&core, messages, true).await {
                    state.note_error(&err, "catching up with the harness failed");
                }
            }
            Err(crate::harness::HarnessError::UnknownSession(why)) => {
                // The harness no longer knows the conversation: its sandbox was made again
                // (a pod replaced by an eviction or a drain) under the live session. A restart
                // brings it back with the conversation replayed, and delivers what waits.
                if !session.phase.in_transition() {
                    tracing::warn!(session = %id, %why, "the harness lost the session's conversation; restarting the session to recover it");
                    if let Err(err) = core.restart(id).await {
                        tracing::warn!(session = %id, %err, "cannot restart the session to recover it");
                    }
                }
                return;
            }
            Err(err) => tracing::debug!(session = %id, %err, "cannot list the harness's messages"),
        }
        catch_up_asks(&core, id, &endpoint, &harness_session).await;
        let mut batch: Vec<NewEvent> = Vec::new();
        let mut flush_at = Instant::now() + FLUSH_EVERY;
        // Something should reach the store now (a tool call, a finished message): it goes with
        // the events already here, once none is left to read at once.
        let mut flush_soon = false;
        loop {
            if state.lost {
                tracing::warn!(session = %id, "this core no longer follows the session (its lease ran out); stopping at once");
                return;
            }
            if flush_soon && batch.len() >= BATCH {
                state.flush(&mut batch).await;
                flush_soon = false;
                flush_at = Instant::now() + FLUSH_EVERY;
            }
            let next = if flush_soon {
                match events.next().now_or_never() {
                    Some(next) => Ok(next),
                    None => {
                        state.flush(&mut batch).await;
                        flush_soon = false;
                        flush_at = Instant::now() + FLUSH_EVERY;
                        continue;
                    }
                }
            } else {
                // Woken for the next flush only when there is something to flush: an idle
                // session costs nothing between its harness's events (a thousand of them woke
                // 6,700 times a second for nothing).
                let wake_at = if batch.is_empty() && !state.has_changes() {
                    Instant::now() + IDLE_WAIT
                } else {
                    flush_at
                };
                let wake_at = state.recheck.map_or(wake_at, |at| at.min(wake_at));
                tokio::select! {
                    next = tokio::time::timeout_at(wake_at, events.next()) => next,
                    _ = stop.changed() => break,
                }
            };
            let event = match next {
                Err(_) => {
                    state.flush(&mut batch).await;
                    flush_at = Instant::now() + FLUSH_EVERY;
                    if state.recheck.is_some_and(|at| at <= Instant::now()) {
                        // The prompt never showed up in the harness: the turn it was to open
                        // is lost, and the session idle unless the harness says otherwise now.
                        state.recheck = None;
                        match core.harness().messages(&endpoint, &harness_session).await {
                            Ok(messages) => {
                                if let Err(err) = state.catch_up(&core, messages, false).await {
                                    state.note_error(&err, "catching up with the harness failed");
                                }
                            }
                            Err(err) => {
                                tracing::debug!(session = %id, %err, "cannot list the harness's messages")
                            }
                        }
                    }
                    continue;
                }
                Ok(None) => break,
                Ok(Some(Err(err))) => {
                    tracing::debug!(session = %id, %err, "harness bus interrupted; reconnecting");
                    break;
                }
                Ok(Some(Ok(event))) => event,
            };
            if event.session.as_deref() != Some(harness_session.as_str()) {
                continue;
            }
            let HarnessEvent {
                kind,
                payload,
                update,
                ..
            } = event;
            if batch.is_empty() && !state.has_changes() {
                // The first event after a quiet spell: the flush comes a period from now.
                flush_at = Instant::now() + FLUSH_EVERY;
            }
            batch.push(NewEvent::new(format!("harness.{kind}"), payload));
            match state.apply(&core, update).await {
                Then::Wait => {}
                Then::Flush => flush_soon = true,
                Then::TurnEnded => {
                    state.flush(&mut batch).await;
                    flush_soon = false;
                    flush_at = Instant::now() + FLUSH_EVERY;
                    if let Err(err) = state.idle(&core).await {
                        state.note_error(&err, "cannot record the end of the turn");
                    }
                }
            }
            if batch.len() >= BATCH {
                state.flush(&mut batch).await;
                flush_soon = false;
                flush_at = Instant::now() + FLUSH_EVERY;
            }
        }
        state.flush(&mut batch).await;
    }
}

/// Where a pump's writes go: the core's grouped writes, fenced by the pump's hold on its session.
struct Writer {
    fence: Fence,
    writes: IngestWrites,
}

/// What the pump does after an update.
enum Then {
    /// Nothing yet: it is written with the next flush.
    Wait,
    /// Flush soon: with the events already here.
    Flush,
    /// The turn is over: flush, then the session is idle.
    TurnEnded,
}

/// What a pump knows of its session's transcript.
struct State {
    session: Uuid,
    /// The harness's message id → our seq and role.
    links: HashMap<String, (i64, MessageRole)>,
    /// Parts of messages being streamed (our seq → (harness part id, part)).
    parts: HashMap<i64, Vec<(String, Part)>>,
    /// Parts that arrived before their message.
    early: HashMap<String, Vec<(String, Part)>>,
    /// User messages in the harness that are not ours, waiting for their text.
    foreign: HashSet<String>,
    /// Harness messages kept out of the transcript (agentdeck's own history replays).
    ignored: HashSet<String>,
    /// Our user messages the harness has not echoed yet, oldest first.
    unlinked_users: VecDeque<i64>,
    /// Highest seq read from the store.
    read_to: i64,
    dirty: BTreeSet<i64>,
    /// Messages that ended since the last flush: their status (and error), written with it.
    finished: BTreeMap<i64, MessagePatch>,
    /// The diffs last written for each person's message (each step says them again).
    diffs: BTreeMap<i64, Vec<crate::model::FileDiff>>,
    /// Failed messages' errors as explained (the gateway asked about once each).
    explained: HashMap<i64, String>,
    /// Messages text was streamed into (as deltas) since the last flush: their part updates
    /// wait for the next flush like the deltas do; any other part update is written at once.
    streaming: HashSet<i64>,
    /// A write was refused because this core no longer holds the session: the pump stops.
    lost: bool,
    /// When to look at the harness's conversation again: a catch-up found the session busy,
    /// no turn open in the harness, and a prompt of ours not in it yet ([`ECHO_GRACE`]).
    recheck: Option<Instant>,
    writer: Writer,
}

/// Agentdeck's own history replay, echoed by the harness as a user message.
fn is_replay(parts: &[(String, Part)]) -> bool {
    parts
        .iter()
        .any(|(_, p)| matches!(p, Part::Text { text } if text.starts_with(super::REPLAY_PREFIX)))
}

fn upsert(parts: &mut Vec<(String, Part)>, id: String, part: Part) {
    match parts.iter_mut().find(|(pid, _)| *pid == id) {
        Some(slot) => slot.1 = part,
        None => parts.push((id, part)),
    }
}

impl State {
    /// Logs a refused write; one refused for want of the session's lease stops the pump.
    fn note_error(&mut self, err: &crate::store::StoreError, what: &str) {
        if matches!(err, crate::store::StoreError::Fenced(_)) {
            self.lost = true;
        } else {
            tracing::warn!(session = %self.session, %err, "{what}");
        }
    }

    async fn load(core: &Core, session: Uuid, writer: Writer) -> crate::store::Result<State> {
        let mut state = State {
            session,
            links: HashMap::new(),
            parts: HashMap::new(),
            early: HashMap::new(),
            foreign: HashSet::new(),
            ignored: HashSet::new(),
            unlinked_users: VecDeque::new(),
            read_to: 0,
            dirty: BTreeSet::new(),
            finished: BTreeMap::new(),
            diffs: BTreeMap::new(),
            explained: HashMap::new(),
            streaming: HashSet::new(),
            lost: false,
            recheck: None,
            writer,
        };
        state.read_new(core).await?;
        Ok(state)
    }

    /// Whether anything waits for the next flush besides raw events.
    fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || !self.finished.is_empty()
    }

    /// Reads messages stored since the last look (our users' messages in particular).
    async fn read_new(&mut self, core: &Core) -> crate::store::Result<()> {
        loop {
            let page = core
                .store()
                .list_messages(self.session, self.read_to, 500)
                .await?;
            let Some(last) = page.last() else { break };
            self.read_to = last.seq;
            for m in page {
                match &m.harness_message_id {
                    Some(h) => {
                        self.links.insert(h.clone(), (m.seq, m.role));
                    }
                    None if m.role == MessageRole::User => self.unlinked_users.push_back(m.seq),
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// Links (or records) a message the harness reports; returns our seq.
    async fn on_message(
        &mut self,
        core: &Core,
        info: &MessageInfo,
    ) -> crate::store::Result<Option<i64>> {
        if let Some((seq, role)) = self.links.get(&info.id).copied() {
            if role == MessageRole::User
                && let Some(diffs) = &info.diffs
                && self.diffs.get(&seq) != Some(diffs)
            {
                // What the turn changed, said at each step and once more after it.
                let patch = MessagePatch {
                    diffs: Some(diffs.clone()),
                    ..Default::default()
                };
                core.store()
                    .update_message(self.session, seq, &patch)
                    .await?;
                self.diffs.insert(seq, diffs.clone());
            }
            if role == MessageRole::Assistant && info.done {
                // Written with the next flush (at once: a finished message flushes), with its
                // parts.
                self.dirty.insert(seq);
                let status = if info.aborted {
                    MessageStatus::Aborted
                } else if info.error.is_some() {
                    MessageStatus::Failed
                } else {
                    MessageStatus::Complete
                };
                let error = self.explain(core, seq, status, info.error.as_deref()).await;
                self.stop_unfinished_tools(seq, status, error.as_deref());
                let patch = MessagePatch {
                    status: Some(status),
                    error: error.map(Some),
                    usage: info.usage,
                    ..Default::default()
                };
                self.finished.insert(seq, patch);
            }
            return Ok(Some(seq));
        }
        if self.ignored.contains(&info.id) {
            return Ok(None);
        }
        let early = self.early.remove(&info.id).unwrap_or_default();
        match info.role {
            MessageRole::User => {
                if is_replay(&early) {
                    self.ignored.insert(info.id.clone());
                    return Ok(None);
                }
                // What was stored since the last look (a person's rare: one read each).
                self.read_new(core).await?;
                // Our own message, echoed: link it (the oldest one sent and not yet linked; one
                // that failed unsent never reaches the harness).
                while let Some(seq) = self.unlinked_users.pop_front() {
                    if self.failed_unsent(core, seq).await? {
                        continue;
                    }
                    let patch = MessagePatch {
                        harness_message_id: Some(Some(info.id.clone())),
                        ..Default::default()
                    };
                    if core
                        .store()
                        .update_message(self.session, seq, &patch)
                        .await
                        .is_ok()
                    {
                        self.links.insert(info.id.clone(), (seq, MessageRole::User));
                        self.recheck = None;
                        return Ok(Some(seq));
                    }
                }
                // Not ours: someone talked to the harness directly. Keep what they said, once
                // its text is known (it may be agentdeck's own history replay).
                if early.is_empty() {
                    self.foreign.insert(info.id.clone());
                    return Ok(None);
                }
                self.foreign.remove(&info.id);
                let m = core
                    .store()
                    .append_message(
                        self.session,
                        &NewMessage {
                            role: MessageRole::User,
                            status: MessageStatus::Complete,
                            parts: early.into_iter().map(|(_, p)| p).collect(),
                            harness_message_id: Some(info.id.clone()),
                        },
                    )
                    .await?;
                self.read_to = self.read_to.max(m.seq);
                self.links
                    .insert(info.id.clone(), (m.seq, MessageRole::User));
                Ok(Some(m.seq))
            }
            role => {
                let status = match (&info.error, info.done) {
                    _ if info.aborted => MessageStatus::Aborted,
                    (Some(_), _) => MessageStatus::Failed,
                    (None, true) => MessageStatus::Complete,
                    (None, false) => MessageStatus::Pending,
                };
                let m = core
                    .store()
                    .append_message(
                        self.session,
                        &NewMessage {
                            role,
                            status,
                            parts: early.iter().map(|(_, p)| p.clone()).collect(),
                            harness_message_id: Some(info.id.clone()),
                        },
                    )
                    .await?;
                let usage = info.usage.filter(|_| info.done);
                if info.error.is_some() || usage.is_some() {
                    let patch = MessagePatch {
                        error: info.error.clone().map(Some),
                        usage,
                        ..Default::default()
                    };
                    core.store()
                        .update_message(self.session, m.seq, &patch)
                        .await?;
                }
                self.read_to = self.read_to.max(m.seq);
                self.links.insert(info.id.clone(), (m.seq, role));
                self.parts.insert(m.seq, early);
                if self.stop_unfinished_tools(m.seq, status, info.error.as_deref()) {
                    self.dirty.insert(m.seq);
                }
                Ok(Some(m.seq))
            }
        }
    }

    /// Applies one update; says when it should reach the store.
    async fn apply(&mut self, core: &Core, update: Update) -> Then {
        let result: crate::store::Result<Then> = async {
            match update {
                Update::Message(info) => {
                    self.on_message(core, &info).await?;
                    Ok(if info.done { Then::Flush } else { Then::Wait })
                }
                Update::Part {
                    message_id,
                    part_id,
                    part,
                } => match self.links.get(&message_id).copied() {
                    Some((_, MessageRole::User)) => Ok(Then::Wait),
                    Some((seq, _)) => {
                        // A tool call, or a part that arrives whole (not streamed as deltas),
                        // reaches the store (and the screens following it) at once.
                        let urgent =
                            matches!(part, Part::Tool { .. }) || !self.streaming.contains(&seq);
                        upsert(self.parts.entry(seq).or_default(), part_id, part);
                        self.dirty.insert(seq);
                        Ok(if urgent { Then::Flush } else { Then::Wait })
                    }
                    None if self.ignored.contains(&message_id) => Ok(Then::Wait),
                    None if self.foreign.contains(&message_id) => {
                        upsert(
                            self.early.entry(message_id.clone()).or_default(),
                            part_id,
                            part,
                        );
                        let info = MessageInfo {
                            id: message_id,
                            role: MessageRole::User,
                            done: true,
                            error: None,
                            aborted: false,
                            usage: None,
                            diffs: None,
                        };
                        self.on_message(core, &info).await?;
                        Ok(Then::Wait)
                    }
                    None => {
                        upsert(self.early.entry(message_id).or_default(), part_id, part);
                        Ok(Then::Wait)
                    }
                },
                Update::Delta {
                    message_id,
                    part_id,
                    field,
                    delta,
                } => {
                    let Some((seq, role)) = self.links.get(&message_id).copied() else {
                        return Ok(Then::Wait);
                    };
                    if role == MessageRole::User || field != "text" {
                        return Ok(Then::Wait);
                    }
                    let parts = self.parts.entry(seq).or_default();
                    let index = match parts.iter().position(|(pid, _)| *pid == part_id) {
                        Some(i) => i,
                        None => {
                            parts.push((part_id, Part::text("")));
                            parts.len() - 1
                        }
                    };
                    if let Part::Text { text } | Part::Reasoning { text } = &mut parts[index].1 {
                        text.push_str(&delta);
                    }
                    core.publish_delta(LiveDelta {
                        session: self.session,
                        seq,
                        part: index,
                        text: delta,
                    });
                    self.dirty.insert(seq);
                    self.streaming.insert(seq);
                    Ok(Then::Wait)
                }
                Update::Busy => {
                    let patch = SessionPatch {
                        idle_deadline: Some(None),
                        last_activity_at: Some(chrono::Utc::now()),
                        ..Transition::TurnStarted.patch()
                    };
                    super::write_aside("marking the session busy", self.session, || {
                        core.store().update_session(self.session, &patch)
                    })
                    .await;
                    Ok(Then::Wait)
                }
                Update::Idle => Ok(Then::TurnEnded),
                Update::Error(message) => {
                    let patch = SessionPatch {
                        phase_detail: Some(Some(format!("agent error: {message}"))),
                        ..Default::default()
                    };
                    super::write_aside("noting the agent's error", self.session, || {
                        core.store().update_session(self.session, &patch)
                    })
                    .await;
                    Ok(Then::Flush)
                }
                Update::Asked(ask) => {
                    super::write_aside("recording what the agent asks", self.session, || {
                        core.store().record_ask(self.session, &ask)
                    })
                    .await;
                    Ok(Then::Flush)
                }
                Update::AskSettled { id, status, answer } => {
                    super::write_aside("settling an ask", self.session, || {
                        core.store()
                            .settle_ask(self.session, &id, status, answer.as_ref())
                    })
                    .await;
                    Ok(Then::Wait)
                }
                Update::Other => Ok(Then::Wait),
            }
        }
        .await;
        result.unwrap_or_else(|err| {
            self.note_error(&err, "cannot record a harness update");
            Then::Wait
        })
    }

    /// The turn is over (everything streamed was flushed first): the session is idle.
    async fn idle(&mut self, core: &Core) -> crate::store::Result<()> {
        self.recheck = None;
        let Some(session) = core.store().get_session(self.session).await? else {
            return Ok(());
        };
        let idle_for = core
            .config()
            .agents
            .get(&session.agent_id)
            .map_or(Duration::from_secs(1800), |a| a.idle_timeout);
        let patch = SessionPatch {
            idle_deadline: Some(Some(
                chrono::Utc::now()
                    + chrono::Duration::from_std(idle_for).unwrap_or(chrono::Duration::MAX),
            )),
            last_activity_at: Some(chrono::Utc::now()),
            ..Transition::TurnEnded.patch()
        };
        super::write_aside("marking the session idle", self.session, || {
            core.store().update_session(self.session, &patch)
        })
        .await;
        // A turn that ended waits for nothing: what is still open was dropped with it.
        for ask in core.store().list_asks(self.session, true).await? {
            super::write_aside("settling an ask the turn left open", self.session, || {
                core.store()
                    .settle_ask(self.session, &ask.id, AskStatus::Gone, None)
            })
            .await;
        }
        Ok(())
    }

    /// A turn that failed while the agents' gateway does not answer failed because of it (the
    /// harness's own error names no gateway): the error says so, naming it. Asked once per
    /// message (a catch-up reads finished messages again).
    async fn explain(
        &mut self,
        core: &Core,
        seq: i64,
        status: MessageStatus,
        error: Option<&str>,
    ) -> Option<String> {
        let error = error?;
        if status != MessageStatus::Failed {
            return Some(error.to_string());
        }
        if let Some(said) = self.explained.get(&seq) {
            return Some(said.clone());
        }
        let said = match core.gateway_answers().await {
            Ok(()) => error.to_string(),
            Err(why) => format!("{error} ({why})"),
        };
        self.explained.insert(seq, said.clone());
        Some(said)
    }

    /// A message that ended badly (aborted, failed) will not finish its tool calls: those
    /// still pending or running are stopped (they showed `running` for good). Returns whether
    /// any was.
    fn stop_unfinished_tools(
        &mut self,
        seq: i64,
        status: MessageStatus,
        error: Option<&str>,
    ) -> bool {
        let Some(why) = crate::model::why_tools_stopped(status, error) else {
            return false;
        };
        let Some(parts) = self.parts.get_mut(&seq) else {
            return false;
        };
        let mut stopped = false;
        for (_, part) in parts.iter_mut() {
            stopped |= part.stop_unfinished(&why);
        }
        stopped
    }

    /// Writes the raw events gathered so far and what changed in the messages, at once (with
    /// the other sessions' writes of this core).
    async fn flush(&mut self, batch: &mut Vec<NewEvent>) {
        let mut messages = Vec::new();
        let seqs: BTreeSet<i64> = self
            .dirty
            .iter()
            .chain(self.finished.keys())
            .copied()
            .collect();
        let finished = std::mem::take(&mut self.finished);
        let dirty = std::mem::take(&mut self.dirty);
        for &seq in &seqs {
            let mut patch = finished.get(&seq).cloned().unwrap_or_default();
            if dirty.contains(&seq)
                && let Some(parts) = self.parts.get(&seq)
            {
                patch.parts = Some(parts.iter().map(|(_, p)| p.clone()).collect());
            }
            messages.push((seq, patch));
        }
        self.streaming.clear();
        let write = IngestWrite {
            session: self.session,
            fence: Some(self.writer.fence.clone()),
            events: std::mem::take(batch),
            messages,
        };
        let events = write.events.len();
        if let Err(err) = self.writer.writes.write(write).await {
            if !matches!(err, crate::store::StoreError::Fenced(_)) {
                // The messages are written again with the next flush (the raw events are
                // not: the message list, caught up at the next reconnection, is the truth).
                tracing::warn!(session = %self.session, events, "raw harness events not recorded");
                self.dirty.extend(dirty);
                for (seq, patch) in finished {
                    self.finished.entry(seq).or_insert(patch);
                }
            }
            self.note_error(&err, "cannot record harness events and streamed text");
        }
    }

    /// Brings the store in line with the harness's whole conversation.
    ///
    /// `patient`: a busy session whose harness shows no open turn is idle unless a prompt of ours
    /// is still to appear in it; then the look is taken again after [`ECHO_GRACE`], impatiently.
    async fn catch_up(
        &mut self,
        core: &Core,
        messages: Vec<HarnessMessage>,
        patient: bool,
    ) -> crate::store::Result<()> {
        // The harness is mid-turn if an assistant message is open or a user's has no answer yet.
        let open = messages
            .iter()
            .any(|m| m.info.role == MessageRole::Assistant && !m.info.done)
            || messages
                .last()
                .is_some_and(|m| m.info.role == MessageRole::User);
        for m in messages {
            if m.info.role == MessageRole::User && !self.links.contains_key(&m.info.id) {
                self.early.insert(m.info.id.clone(), m.parts.clone());
            }
            let Some(seq) = self.on_message(core, &m.info).await? else {
                continue;
            };
            if m.info.role == MessageRole::User {
                continue;
            }
            let parts = self.parts.entry(seq).or_default();
            for (id, part) in m.parts {
                upsert(parts, id, part);
            }
            self.dirty.insert(seq);
        }
        self.flush(&mut Vec::new()).await;
        if self.lost {
            return Err(crate::store::StoreError::Fenced(
                self.writer.fence.to_string(),
            ));
        }
        // Events missed while nobody followed this harness may include the end of a turn: a
        // busy session whose harness is not mid-turn is idle, unless the turn is one the
        // harness accepted and has not listed yet.
        if !open
            && let Some(s) = core.store().get_session(self.session).await?
            && s.status == SessionStatus::Busy
        {
            if patient && self.awaits_echo(core).await? {
                tracing::debug!(session = %self.session, "a prompt is not in the harness's conversation yet; looking again later");
                self.recheck = Some(Instant::now() + ECHO_GRACE);
            } else {
                self.idle(core).await?;
            }
        }
        Ok(())
    }

    /// Whether a prompt of ours is on its way to the harness or accepted by it, and not in its
    /// conversation yet.
    async fn awaits_echo(&mut self, core: &Core) -> crate::store::Result<bool> {
        self.read_new(core).await?;
        let Some(&first) = self.unlinked_users.front() else {
            return Ok(false);
        };
        let mut after = first - 1;
        loop {
            let page = core.store().list_messages(self.session, after, 500).await?;
            let Some(last) = page.last() else {
                return Ok(false);
            };
            after = last.seq;
            if page.iter().any(|m| {
                m.role == MessageRole::User
                    && m.harness_message_id.is_none()
                    && m.status != MessageStatus::Failed
                    && self.unlinked_users.contains(&m.seq)
            }) {
                return Ok(true);
            }
        }
    }

    /// Whether our message `seq` failed without being sent (so the harness never echoes it).
    async fn failed_unsent(&self, core: &Core, seq: i64) -> crate::store::Result<bool> {
        let page = core.store().list_messages(self.session, seq - 1, 1).await?;
        Ok(page
            .first()
            .is_some_and(|m| m.seq == seq && m.status == MessageStatus::Failed))
    }
}
