//! The cockpit: `agentdeck` with no subcommand. It reaches the platform through a
//! [`Deck`](crate::deck::Deck) only (the embedded core, or a client of `serve`).
//!
//! Each screen (the sessions list, a transcript, sandbox health, a log, a diagnosis) is a
//! [`screen::Screen`] in its own module; `app` keeps what the screens share and routes to the
//! one shown; `actions` is the one table of keys; `views` draws the frame around the screen.
//!
//! One loop owns the state. Background tasks (the terminal's input, the store's change feed,
//! live deltas, a clock) send messages into one channel; the loop applies a burst of them, then
//! draws once, and only if something changed. I/O (loading, sending, lifecycle commands) runs
//! in tasks that report back as messages, never on the render path.

pub mod actions;
pub mod app;
pub mod cells;
pub mod changes;
pub mod diagnose;
pub mod drafts;
pub mod health;
pub mod logs;
pub mod markdown;
pub mod navigation;
pub mod notify;
pub mod panels;
pub mod quiet;
pub mod screen;
pub mod sessions;
pub mod theme;
pub mod transcript;
pub mod views;

use crate::core::Change;
use crate::core::CreateSession;
use crate::deck::Deck;
use actions::{Action, Keymap};
use anyhow::Context;
use app::{App, Effect, Msg};
use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures::StreamExt;
use std::io::Stdout;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// Sessions read from the store at a time when the cockpit starts: the newest show at once.
const SESSION_PAGE: i64 = 5000;
/// How long the loop counts a transcript's lines at a new width before it looks for input
/// again (see `Transcript::settle`).
const SETTLE_SLICE: Duration = Duration::from_millis(1);

pub struct Options {
    pub theme: Option<String>,
    pub read_only: bool,
    pub mouse: bool,
}

type Term = ratatui::Terminal<quiet::Quiet<ratatui::backend::CrosstermBackend<Stdout>>>;

fn enter(mouse: bool) -> std::io::Result<Term> {
    crossterm::terminal::enable_raw_mode()?;
    let mut out = std::io::stdout();
    // Cleared here, not with `Terminal::clear`: that asks the terminal where its cursor is,
    // and after a shell the answer could be late or read by the input task (the cockpit then
    // failed to come back, or came back on a blank screen showing the answer's `8;59`).
    crossterm::execute!(
        out,
        crossterm::terminal::EnterAlternateScreen,
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
    )?;
    if mouse {
        crossterm::execute!(out, crossterm::event::EnableMouseCapture)?;
    }
    fresh_terminal()
}

/// A terminal for a blank screen: its last frame is blank, as the screen is, so its first
/// frame is drawn whole.
fn fresh_terminal() -> std::io::Result<Term> {
    ratatui::Terminal::new(quiet::Quiet::new(ratatui::backend::CrosstermBackend::new(
        std::io::stdout(),
    )))
}

/// Ctrl-L: the whole screen drawn again (line noise over SSH, another program that wrote over
/// it): cleared, without asking the terminal anything, then a whole frame.
fn redraw_whole(term: &mut Term) -> std::io::Result<()> {
    crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
    )?;
    *term = fresh_terminal()?;
    Ok(())
}

/// Puts the terminal back as it was. Safe to call more than once, and from the panic hook.
fn leave() {
    let mut out = std::io::stdout();
    let _ = crossterm::execute!(
        out,
        crossterm::event::DisableMouseCapture,
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = crossterm::terminal::disable_raw_mode();
}

struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        leave();
    }
}

/// Who acts from a cockpit, for the sessions' history: `cockpit:$USER`.
pub fn operator() -> String {
    format!(
        "cockpit:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

pub async fn run(deck: Arc<dyn Deck>, options: Options) -> anyhow::Result<()> {
    let config = deck.config();
    let requested = options.theme.as_deref().or(config.tui.theme.as_deref());
    let theme =
        theme::Theme::choose(requested, &config.dirs.config_dir).map_err(anyhow::Error::msg)?;
    let tui = &config.tui;
    // The context connected to, else the one configured (a runtime that could not connect
    // still counts as that context's).
    let context = deck.runtime_context().or_else(|| {
        (config.runtime == crate::config::RuntimeKind::Kubernetes)
            .then(|| config.kubernetes.context.clone())
            .flatten()
    });
    let read_only = options.read_only || deck.read_only() || tui.read_only_on(context.as_deref());
    let keymap = Keymap::with_keys(read_only, &tui.keys).map_err(anyhow::Error::msg)?;
    let runtime = match &context {
        Some(c) => format!("{}:{c}", deck.runtime_kind()),
        None => deck.runtime_kind(),
    };
    let mut app = App::new(keymap, theme, deck.agents(), deck.describe(), runtime);
    app.context = context.clone();
    app.choices = deck.agent_choices();
    app.preview_on = tui.preview;
    app.sessions.show_ended(tui.show_ended);
    app.theme_fixed = options.theme.is_some();

    // Drafts an earlier cockpit left (a dropped connection, a crash, a quit).
    let drafts_at = drafts::path(&config.dirs.state_dir);
    match drafts::load(&drafts_at) {
        Ok(saved) => app.restore_drafts(saved),
        Err(e) => {
            tracing::warn!("{e}");
            app.status = Some((e, true));
        }
    }
    let mut saved_drafts = app.unsent();
    let mut drafts_saved_at = std::time::Instant::now();

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        leave();
        previous(info);
    }));
    let mouse = options.mouse || config.tui.mouse;
    let mut term = enter(mouse).context("cannot set up the terminal")?;
    let _restore = Restore;

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    // Set while a shell has the terminal: the input task lets go of it.
    let (paused_tx, paused_rx) = watch::channel(false);
    let (attached_tx, attached_rx) = watch::channel::<Option<Uuid>>(None);
    let (logs_tx, logs_rx) = watch::channel::<Option<u64>>(None);
    let mut tasks = vec![
        tokio::spawn(input(tx.clone(), paused_rx)),
        tokio::spawn(follow_changes(
            Ctx {
                deck: deck.clone(),
                tx: tx.clone(),
                logs_for: watch::channel(None).1,
            },
            attached_rx.clone(),
        )),
        tokio::spawn(follow_deltas(deck.clone(), tx.clone(), attached_rx)),
        tokio::spawn(clock(tx.clone())),
        tokio::spawn(follow_health(deck.clone(), tx.clone())),
        tokio::spawn(connectivity(deck.clone(), tx.clone())),
        tokio::spawn(budgets(deck.clone(), tx.clone())),
        tokio::spawn(reload_on_hangup(tx.clone())),
    ];
    let ctx = Ctx {
        deck: deck.clone(),
        tx: tx.clone(),
        logs_for: logs_rx,
    };
    ctx.run(Effect::LoadSessions { pages: true });
    let notifier = notify::Notify::new(config.notify.clone());

    let now = chrono::Utc::now;
    term.draw(|f| views::render(f, &app, now()))?;
    loop {
        let first = if app.settling() {
            // A resize left line counts to make exact: a slice at a time while nothing comes.
            match rx.try_recv() {
                Ok(msg) => msg,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if app.settle(SETTLE_SLICE) {
                        // the scroll position shown is exact now
                        term.draw(|f| views::render(f, &app, now()))?;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
            }
        } else {
            match rx.recv().await {
                Some(msg) => msg,
                None => break,
            }
        };
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for msg in batch {
            if let Msg::Key(k) = &msg
                && k.code == KeyCode::Char('z')
                && k.modifiers.contains(KeyModifiers::CONTROL)
            {
                suspend_self(&mut term, mouse)?;
                app.dirty = true;
                continue;
            }
            if let Msg::Key(k) = &msg
                && k.code == KeyCode::Char('l')
                && k.modifiers.contains(KeyModifiers::CONTROL)
            {
                redraw_whole(&mut term)?;
                app.dirty = true;
                continue;
            }
            if let Msg::Shell(shell) = msg {
                let said = match run_shell(&mut term, mouse, &paused_tx, *shell).await {
                    Ok(ended) => Msg::Info(format!("the shell ended ({ended})")),
                    Err(e) => Msg::Error(format!("the shell: {e:#}")),
                };
                app.update(said);
                app.dirty = true;
                continue;
            }
            for effect in app.update(msg) {
                match effect {
                    // Written between two frames, never inside one.
                    Effect::Notify(notice) => {
                        let bytes = notifier.terminal_bytes(&notice);
                        if !bytes.is_empty() {
                            use std::io::Write;
                            let out = term.backend_mut().inner_mut();
                            if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
                                tracing::warn!(error = %e, "cannot ring the terminal");
                            }
                        }
                        notifier.run_hook(&notice);
                    }
                    effect => ctx.run(effect),
                }
            }
        }
        // Unsent text to disk: at most once a second while typing, and on the way out.
        if app.drafts_changed && (app.quit || drafts_saved_at.elapsed() >= Duration::from_secs(1)) {
            app.drafts_changed = false;
            let unsent = app.unsent();
            if unsent != saved_drafts {
                drafts_saved_at = std::time::Instant::now();
                let (at, snapshot) = (drafts_at.clone(), unsent.clone());
                let write = tokio::task::spawn_blocking(move || drafts::save(&at, &snapshot));
                if app.quit {
                    // the last save is waited for: the process ends next
                    match write.await {
                        Ok(Err(e)) => tracing::error!("{e}"),
                        Err(e) => tracing::error!("saving the drafts: {e}"),
                        Ok(Ok(())) => {}
                    }
                } else {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Ok(Err(e)) = write.await {
                            let _ = tx.send(Msg::Error(e));
                        }
                    });
                }
                saved_drafts = unsent;
            }
        }
        if app.quit {
            break;
        }
        // What streams to the screen: the attached transcript, else the preview's session.
        let attached = app
            .transcript
            .as_ref()
            .or(app.preview.as_ref())
            .map(|t| t.session);
        if *attached_tx.borrow() != attached {
            let _ = attached_tx.send(attached);
        }
        let logs = match &app.panel {
            Some(panels::Panel::Logs(v)) => Some(v.stream),
            _ => None,
        };
        if *logs_tx.borrow() != logs {
            let _ = logs_tx.send(logs);
        }
        if app.dirty {
            app.dirty = false;
            term.draw(|f| views::render(f, &app, now()))?;
        }
    }
    for t in tasks.drain(..) {
        t.abort();
    }
    Ok(())
}

/// Ctrl-Z: give the terminal back, stop, and take it again when continued.
fn suspend_self(term: &mut Term, mouse: bool) -> anyhow::Result<()> {
    leave();
    #[cfg(unix)]
    unsafe {
        libc::raise(libc::SIGTSTP);
    }
    *term = enter(mouse)?;
    Ok(())
}

/// The terminal's keys, mouse and resizes as messages; while `paused` (a shell has the
/// terminal) it reads nothing, so that every key goes to the shell.
async fn input(tx: mpsc::UnboundedSender<Msg>, mut paused: watch::Receiver<bool>) {
    loop {
        if *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut events = EventStream::new();
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                changed = paused.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *paused.borrow() {
                        break;
                    }
                    continue;
                }
            };
            let Some(event) = event else { return };
            let msg = match event {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => Msg::Key(k),
                Ok(Event::Resize(..)) => Msg::Resize,
                Ok(Event::Mouse(m)) => Msg::Mouse(m),
                Ok(_) => continue,
                Err(err) => Msg::Error(format!("terminal input: {err}")),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
        // Dropped here: crossterm stops reading the terminal.
    }
}

/// Gives the terminal to a shell in a sandbox and takes it back, intact, when the shell ends.
async fn run_shell(
    term: &mut Term,
    mouse: bool,
    paused: &watch::Sender<bool>,
    shell: crate::core::Shell,
) -> anyhow::Result<crate::console::Ended> {
    let _ = paused.send(true);
    // A moment for the input task to let go of the terminal.
    tokio::time::sleep(Duration::from_millis(50)).await;
    leave();
    println!("{}", crate::console::banner(&shell));
    let ended = crate::console::run(shell).await;
    *term = enter(mouse)?;
    let _ = paused.send(false);
    ended
}

/// SIGHUP asks the cockpit to read its configuration again (as `:reload` does).
async fn reload_on_hangup(tx: mpsc::UnboundedSender<Msg>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: :reload still reloads");
            return;
        };
        while hangups.recv().await.is_some() {
            if tx.send(Msg::ReloadAsked).is_err() {
                return;
            }
        }
    }
}

async fn clock(tx: mpsc::UnboundedSender<Msg>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if tx.send(Msg::Tick).is_err() {
            return;
        }
    }
}

/// The cockpit's data feeds without its terminal: the store's change feed and the live
/// deltas, turned into messages on `tx` by the same tasks [`run`] starts (`attached` says which
/// transcript is shown). For benchmarks of the path from a harness event to the screen.
pub fn spawn_feeds(
    deck: &Arc<dyn Deck>,
    tx: mpsc::UnboundedSender<Msg>,
    attached: watch::Receiver<Option<Uuid>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ctx = Ctx {
        deck: deck.clone(),
        tx: tx.clone(),
        logs_for: watch::channel(None).1,
    };
    vec![
        tokio::spawn(follow_changes(ctx, attached.clone())),
        tokio::spawn(follow_deltas(deck.clone(), tx, attached)),
    ]
}

/// Turns the store's change feed into fresh data for the app.
async fn follow_changes(ctx: Ctx, attached: watch::Receiver<Option<Uuid>>) {
    let (deck, tx) = (ctx.deck.clone(), ctx.tx.clone());
    let mut feed = deck.changes();
    while let Some(change) = feed.next().await {
        let msg = match change {
            Change::Session(id) => match deck.session(id).await {
                Ok(s) => Some(Msg::Session(Box::new(s))),
                Err(_) => None,
            },
            Change::Agents => Some(Msg::Agents(deck.agents(), deck.agent_choices())),
            Change::Resync => {
                ctx.run(Effect::LoadSessions { pages: false });
                let attached = *attached.borrow();
                if let Some(id) = attached {
                    ctx.run(Effect::LoadMessages {
                        session: id,
                        after: 0,
                    });
                }
                None
            }
            Change::Message { session, seq } if Some(session) == *attached.borrow() => {
                match deck.messages(session, seq - 1, 1000).await {
                    Ok(messages) => Some(Msg::Messages {
                        session,
                        messages,
                        complete: true,
                    }),
                    Err(e) => Some(Msg::Error(e.to_string())),
                }
            }
            _ => None,
        };
        if let Some(msg) = msg
            && tx.send(msg).is_err()
        {
            return;
        }
    }
}

/// The attached session's streamed text as it arrives, from this process's ingest or from the
/// process that follows the session.
async fn follow_deltas(
    deck: Arc<dyn Deck>,
    tx: mpsc::UnboundedSender<Msg>,
    mut attached: watch::Receiver<Option<Uuid>>,
) {
    // A feed that ends (a client of `serve` lost its stream: a restart, the network) is
    // opened again, sooner the first time, every 5 s at most after.
    let mut again = Duration::from_millis(250);
    loop {
        let Some(session) = *attached.borrow_and_update() else {
            if attached.changed().await.is_err() {
                return;
            }
            continue;
        };
        let mut feed = deck.deltas(session);
        loop {
            tokio::select! {
                live = feed.next() => match live {
                    None => {
                        tokio::select! {
                            () = tokio::time::sleep(again) => {}
                            changed = attached.changed() => if changed.is_err() {
                                return;
                            },
                        }
                        again = (again * 2).min(Duration::from_secs(5));
                        break;
                    }
                    Some(crate::core::live::Live::Delta(d)) => {
                        again = Duration::from_millis(250);
                        if tx.send(Msg::Delta(d)).is_err() {
                            return;
                        }
                    }
                    // Missed some: the stored text follows at the next flush.
                    Some(crate::core::live::Live::Missed) => {}
                },
                changed = attached.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// The store and the gateway, checked every few seconds for the status line (nothing would
/// tell us when they go away).
async fn connectivity(deck: Arc<dyn Deck>, tx: mpsc::UnboundedSender<Msg>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let now = deck.connectivity().await;
        if tx.send(Msg::Connectivity(now)).is_err() {
            return;
        }
    }
}

/// The teams' spend against their monthly budgets, every half minute for the top bar (a
/// team's spend moves with every turn of each of its sessions: read, not followed).
async fn budgets(deck: Arc<dyn Deck>, tx: mpsc::UnboundedSender<Msg>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        match deck.team_budgets().await {
            Ok(b) => {
                if tx.send(Msg::Budgets(b)).is_err() {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not read the teams' budgets"),
        }
    }
}

async fn follow_health(deck: Arc<dyn Deck>, tx: mpsc::UnboundedSender<Msg>) {
    let mut changes = deck.health_changes();
    loop {
        match changes.recv().await {
            Ok(change) => {
                if let Some(id) = change.session_id
                    && tx.send(Msg::HealthChange(id, change.health)).is_err()
                {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                // The runtime's watch may start later (Kubernetes starts it on first use).
                tokio::time::sleep(Duration::from_secs(5)).await;
                changes = deck.health_changes();
            }
        }
    }
}

/// Follows a sandbox's log while the log view shows this stream.
async fn follow_logs(
    deck: Arc<dyn Deck>,
    tx: mpsc::UnboundedSender<Msg>,
    session: Uuid,
    id: u64,
    since: &panels::Since,
    mut shown: watch::Receiver<Option<u64>>,
) {
    let options = crate::model::LogOptions {
        tail: since.tail,
        since: since.since,
        follow: true,
    };
    let mut stream = match deck.logs(session, options).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Msg::LogLines {
                stream: id,
                lines: vec![],
                ended: Some(e.to_string()),
            });
            return;
        }
    };
    loop {
        tokio::select! {
            line = stream.next() => {
                let (lines, ended) = match line {
                    Some(Ok(first)) => {
                        // Take what else is ready, so a burst is one message.
                        let mut lines = vec![first];
                        while lines.len() < 1000 {
                            match futures::FutureExt::now_or_never(stream.next()) {
                                Some(Some(Ok(l))) => lines.push(l),
                                _ => break,
                            }
                        }
                        (lines, None)
                    }
                    Some(Err(e)) => (vec![], Some(format!("log stream ended: {e}"))),
                    None => (vec![], Some("end of log".to_string())),
                };
                let done = ended.is_some();
                if tx.send(Msg::LogLines { stream: id, lines, ended }).is_err() || done {
                    return;
                }
            }
            changed = shown.changed() => {
                if changed.is_err() || *shown.borrow() != Some(id) {
                    return;
                }
            }
        }
    }
}

#[derive(Clone)]
struct Ctx {
    deck: Arc<dyn Deck>,
    tx: mpsc::UnboundedSender<Msg>,
    logs_for: watch::Receiver<Option<u64>>,
}

impl Ctx {
    fn run(&self, effect: Effect) {
        run_effect(self, effect);
    }
}

/// Runs an effect in a task; its outcome comes back as a message.
fn run_effect(ctx: &Ctx, effect: Effect) {
    let deck = ctx.deck.clone();
    let tx = ctx.tx.clone();
    let logs_for = ctx.logs_for.clone();
    tokio::spawn(async move {
        let msg = match effect {
            Effect::LoadSessions { pages } => {
                let mut all = Vec::new();
                let mut before = None;
                let mut first = true;
                let mut backoff = Duration::from_secs(1);
                loop {
                    let page = deck.sessions(before, SESSION_PAGE).await;
                    match page {
                        Ok(page) => {
                            let last = page.len() < SESSION_PAGE as usize;
                            before = page.last().map(|s| s.id);
                            if pages {
                                let _ = tx.send(Msg::SessionPage {
                                    sessions: page,
                                    first,
                                    last,
                                });
                            } else {
                                all.extend(page);
                            }
                            first = false;
                            if last {
                                break;
                            }
                        }
                        Err(e) => {
                            // Said on the status line, and tried again from where it failed:
                            // a store that stops answering comes back by itself.
                            tracing::warn!(%e, "cannot list sessions; trying again");
                            let _ = tx.send(Msg::Error(format!(
                                "cannot list sessions (trying again in {}s): {e}",
                                backoff.as_secs()
                            )));
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(8));
                        }
                    }
                }
                if pages {
                    return;
                }
                Msg::Sessions(all)
            }
            Effect::LoadMessages { session, after } => {
                let mut after = after;
                loop {
                    match deck.messages(session, after, 1000).await {
                        Ok(page) => {
                            let complete = page.len() < 1000;
                            after = page.last().map_or(after, |m| m.seq);
                            let _ = tx.send(Msg::Messages {
                                session,
                                messages: page,
                                complete,
                            });
                            if complete {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Msg::Error(format!("cannot read the transcript: {e}")));
                            return;
                        }
                    }
                }
            }
            Effect::Send { session, text } => match deck.send(session, &text).await {
                Ok(m) => Msg::Messages {
                    session,
                    messages: vec![m],
                    complete: true,
                },
                Err(e) => Msg::NotSent {
                    session,
                    text,
                    error: e.to_string(),
                },
            },
            Effect::Lifecycle { action, session } => {
                use crate::model::Command;
                let command = match action {
                    Action::Restart => Command::Restart,
                    Action::Suspend => Command::Suspend,
                    Action::Resume => Command::Resume,
                    Action::End => Command::End,
                    Action::Abort => Command::Abort,
                    _ => return,
                };
                let result = deck.command(session, command).await;
                match result {
                    Ok(s) => Msg::Info(
                        format!("{action:?} requested for \"{}\"", s.title).to_lowercase(),
                    ),
                    Err(e) => Msg::Error(e.to_string()),
                }
            }
            Effect::LoadHealth => match deck.fleet_health().await {
                // The pools are a line above the sandboxes: without them the view still works.
                Ok(rows) => Msg::Health(rows, deck.pools().await.unwrap_or_default()),
                Err(e) => Msg::Error(format!("cannot list sessions: {e}")),
            },
            Effect::FollowLogs {
                session,
                stream,
                since,
            } => {
                let since = panels::SINCE.get(since).unwrap_or(&panels::SINCE[0]);
                follow_logs(deck, tx, session, stream, since, logs_for).await;
                return;
            }
            // The loop tells these itself, between two frames.
            Effect::Notify(_) => return,
            Effect::Shell { session } => {
                let options = crate::console::options();
                match deck.shell(session, &options).await {
                    Ok(shell) => Msg::Shell(Box::new(shell)),
                    Err(e) => Msg::Error(format!("cannot open a shell: {e}")),
                }
            }
            Effect::Fork { session, at_seq } => match deck.fork(session, at_seq).await {
                Ok(fork) => Msg::Forked(Box::new(fork)),
                Err(e) => Msg::Error(format!("cannot fork: {e}")),
            },
            Effect::LoadAsks { session } => match deck.asks(session, true).await {
                Ok(asks) => Msg::Asks { session, asks },
                Err(e) => Msg::Error(format!("cannot read what the agent asks: {e}")),
            },
            Effect::Answer {
                session,
                ask,
                answer,
            } => {
                let words = answer.said();
                let said = match deck.answer(session, &ask, answer).await {
                    Ok(a) => Msg::Info(format!("{}: {words}", crate::sanitize::line(&a.title))),
                    Err(e) => Msg::Error(format!("not answered: {e}")),
                };
                let _ = tx.send(said);
                match deck.asks(session, true).await {
                    Ok(asks) => Msg::Asks { session, asks },
                    Err(e) => Msg::Error(format!("cannot read what the agent asks: {e}")),
                }
            }
            Effect::Reload => {
                let before = deck.config().tui.theme.clone();
                match deck.reload().await {
                    Ok(report) => {
                        let config = deck.config();
                        let theme = (config.tui.theme != before).then(|| {
                            theme::Theme::choose(
                                config.tui.theme.as_deref(),
                                &config.dirs.config_dir,
                            )
                        });
                        Msg::Reloaded(Box::new(app::Reload {
                            report,
                            agents: deck.agents(),
                            choices: deck.agent_choices(),
                            tui: config.tui.clone(),
                            theme,
                        }))
                    }
                    Err(e) => Msg::Error(e.to_string()),
                }
            }
            Effect::Diagnose { session } => match deck.diagnose(session).await {
                Ok(d) => Msg::Diagnosis(Box::new(d)),
                Err(e) => Msg::Error(format!("cannot diagnose the session: {e}")),
            },
            Effect::Rename { session, title } => match deck.rename(session, &title).await {
                Ok(s) => {
                    let _ = tx.send(Msg::Session(Box::new(s)));
                    Msg::Info("renamed".into())
                }
                Err(e) => Msg::Error(format!("cannot rename: {e}")),
            },
            Effect::Budget { session, usd } => match deck.set_budget(session, usd).await {
                Ok(s) => {
                    let said = match s.budget_usd {
                        Some(b) => format!("budget {}", crate::model::usd(b)),
                        None => "budget lifted".to_string(),
                    };
                    let _ = tx.send(Msg::Session(Box::new(s)));
                    Msg::Info(said)
                }
                Err(e) => Msg::Error(format!("cannot set the budget: {e}")),
            },
            Effect::LoadChanges { session } => match deck.diffs(session).await {
                Ok(turns) => Msg::Changes(session, turns),
                Err(e) => Msg::Error(format!("cannot read what the agent changed: {e}")),
            },
            Effect::Create {
                server,
                agent,
                title,
                prompt,
            } => {
                let req = CreateSession {
                    agent_id: Some(agent),
                    title: Some(title).filter(|t| !t.trim().is_empty()),
                    initial_prompt: Some(prompt).filter(|p| !p.trim().is_empty()),
                    ..Default::default()
                };
                match deck.create_on(server.as_deref(), req).await {
                    Ok(s) => {
                        let _ = tx.send(Msg::Session(Box::new(s.clone())));
                        Msg::Info(format!("session \"{}\" created", s.title))
                    }
                    Err(e) => Msg::Error(format!("cannot create the session: {e}")),
                }
            }
        };
        let _ = tx.send(msg);
    });
}
