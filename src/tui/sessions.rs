//! The session list behind the home view: kept indexed by id (newest first), and, under a
//! filter or another sort key, as the ids shown in order; an update is a few binary searches
//! and one move, never a re-sort or a re-filter of everything; only visible rows are drawn. The
//! count of each status (the title bar's, every frame) is kept as sessions come and go.

use super::actions::{Action, Scope};
use super::app::{App, Effect};
use super::cells;
use super::panels::wrap_clean;
use super::screen::{Cx, ListShown, Screen};
use super::views::{age, column_widths, countdown, glyph, scrolled_to, status_style};
use crate::core::failure_advice;
use crate::model::{Session, SessionStatus};
use crate::sanitize;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use std::cmp::Ordering;
use uuid::Uuid;

/// `/` filter: plain words match the title, agent, team, status or id; `key:value` pairs match
/// one field (`agent:`, `team:`, `status:`, `phase:`, `title:`, `id:`, `runtime:`, `server:`);
/// a `-` in front of either leaves out what it matches (`-status:ended`). Ended sessions are
/// left out unless asked for (see [`Filter::hiding_ended`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub text: String,
    /// Ended sessions are left out though the text does not say so.
    pub hides_ended: bool,
    words: Vec<String>,
    pairs: Vec<(String, String)>,
    /// What leaves a session out: words and pairs, as above.
    not_words: Vec<String>,
    not_pairs: Vec<(String, String)>,
}

impl Filter {
    pub fn parse(text: &str) -> Filter {
        let (mut words, mut pairs) = (Vec::new(), Vec::new());
        let (mut not_words, mut not_pairs) = (Vec::new(), Vec::new());
        for token in text.split_whitespace() {
            let lower = token.to_lowercase();
            let (lower, out) = match lower.strip_prefix('-') {
                Some(rest) if !rest.is_empty() => (rest.to_string(), true),
                _ => (lower, false),
            };
            let (w, p) = match out {
                true => (&mut not_words, &mut not_pairs),
                false => (&mut words, &mut pairs),
            };
            match lower.split_once(':') {
                Some((k, v)) if !k.is_empty() => p.push((k.to_string(), v.to_string())),
                _ => w.push(lower),
            }
        }
        Filter {
            text: text.to_string(),
            hides_ended: false,
            words,
            pairs,
            not_words,
            not_pairs,
        }
    }

    /// `text` as a filter that also leaves ended sessions out, unless it asks about status
    /// (`status:ended`, `status:failed`, `-status:busy`: the operator says which), names an id,
    /// or has a word that finds ended sessions (`ended`, `dead`).
    pub fn hiding_ended(text: &str) -> Filter {
        let mut f = Filter::parse(text);
        let asks = f
            .pairs
            .iter()
            .chain(&f.not_pairs)
            .any(|(k, _)| k == "status" || k == "id")
            || f.words
                .iter()
                .any(|w| "ended".contains(w.as_str()) || "dead".contains(w.as_str()));
        if !asks {
            f.not_pairs.push(("status".into(), "ended".into()));
            f.hides_ended = true;
        }
        f
    }

    /// Whether only the filter's own hiding of ended sessions is left (nothing typed).
    pub fn only_hides_ended(&self) -> bool {
        self.hides_ended
            && self.words.is_empty()
            && self.pairs.is_empty()
            && self.not_words.is_empty()
            && self.not_pairs.len() == 1
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
            && self.pairs.is_empty()
            && self.not_words.is_empty()
            && self.not_pairs.is_empty()
    }

    /// Whether every session this filter lets through, `wider` lets through too (each of
    /// `wider`'s words and pairs is within one of this one's): what typing on makes.
    fn within(&self, wider: &Filter) -> bool {
        // (a longer word left out leaves out less: a shortcut only when both leave out the
        // same)
        self.not_words == wider.not_words
            && self.not_pairs == wider.not_pairs
            && wider
                .words
                .iter()
                .all(|w| self.words.iter().any(|x| x.contains(w.as_str())))
            && wider.pairs.iter().all(|(k, v)| {
                self.pairs
                    .iter()
                    .any(|(x, y)| x == k && y.contains(v.as_str()))
            })
    }

    pub fn matches(&self, s: &Session) -> bool {
        let mut buf = Uuid::encode_buffer();
        let id: &str = s.id.hyphenated().encode_lower(&mut buf);
        let field = |k: &str| -> Option<&str> {
            Some(match k {
                "agent" => &s.agent_id,
                "team" => &s.team,
                "status" => status_words(s),
                "phase" => s.phase.as_str(),
                "title" => &s.title,
                "id" => id,
                "runtime" => runtime_of(s),
                "server" => s.server.as_deref().unwrap_or_default(),
                _ => return None,
            })
        };
        // A status is found by the start of one of its words: `ended` is not in `suspended`.
        let status = |v: &str| status_words(s).split(' ').any(|w| w.starts_with(v));
        let word = |w: &String| {
            status(w)
                || ["title", "agent", "team", "id"]
                    .iter()
                    .any(|k| field(k).is_some_and(|f| contains_folded(f, w)))
        };
        let pair = |(k, v): &(String, String)| match k.as_str() {
            "status" => status(v),
            _ => field(k).is_some_and(|f| contains_folded(f, v)),
        };
        self.pairs.iter().all(pair)
            && self.words.iter().all(word)
            && !self.not_pairs.iter().any(pair)
            && !self.not_words.iter().any(word)
    }
}

/// A session's status as the filter sees it: the word shown and the stored name (`ready` and
/// `idle` are both shown as idle, a `dead` session as ended: either word finds them), and
/// `waiting` when its agent waits for a person (`status:waiting` finds them all).
fn status_words(s: &Session) -> &'static str {
    let at_rest = "idle ready";
    match (s.waiting > 0, s.status) {
        (false, SessionStatus::Ready | SessionStatus::Idle) => at_rest,
        (false, SessionStatus::Dead) => "ended dead",
        (false, status) => status.as_str(),
        (true, SessionStatus::Creating) => "waiting creating",
        (true, SessionStatus::Ready | SessionStatus::Idle) => "waiting idle ready",
        (true, SessionStatus::Busy) => "waiting busy",
        (true, SessionStatus::Suspended) => "waiting suspended",
        (true, SessionStatus::Dead) => "waiting ended dead",
        (true, SessionStatus::Failed) => "waiting failed",
    }
}

/// Whether `hay` holds `needle` (already lower case), ignoring case; with no allocation when
/// both are ASCII (filtering 100k sessions runs this for each, on every key typed).
fn contains_folded(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() && needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        if h.len() < n.len() {
            return false;
        }
        // Candidates are where the first byte is, in either case (a vectorised scan).
        let last = h.len() - n.len();
        let (lower, upper) = (n[0].to_ascii_lowercase(), n[0].to_ascii_uppercase());
        return memchr::memchr2_iter(lower, upper, &h[..=last])
            .any(|at| h[at..at + n.len()].eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(needle)
}

/// The order of the home view; `s` steps through them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Newest first (the default).
    #[default]
    Newest,
    /// Most recently active first.
    Activity,
    /// Trouble first: failed, creating, busy, ready, idle, suspended, ended.
    Status,
    /// By agent, then newest first.
    Agent,
    /// By title (ignoring case), then newest first.
    Title,
}

impl SortKey {
    pub const ALL: [SortKey; 5] = [
        SortKey::Newest,
        SortKey::Activity,
        SortKey::Status,
        SortKey::Agent,
        SortKey::Title,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Newest => "newest",
            SortKey::Activity => "activity",
            SortKey::Status => "status",
            SortKey::Agent => "agent",
            SortKey::Title => "title",
        }
    }

    pub fn parse(name: &str) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn next(self) -> SortKey {
        let at = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(at + 1) % SortKey::ALL.len()]
    }

    /// Where `a` goes against `b`; never `Equal` for two sessions (ties go newest first).
    fn cmp(self, a: &Session, b: &Session) -> Ordering {
        let newest = b.id.cmp(&a.id);
        match self {
            SortKey::Newest => newest,
            SortKey::Activity => b.last_activity_at.cmp(&a.last_activity_at).then(newest),
            SortKey::Status => trouble(a.status).cmp(&trouble(b.status)).then(newest),
            SortKey::Agent => a.agent_id.cmp(&b.agent_id).then(newest),
            SortKey::Title => {
                // compared as it goes: no allocation per comparison
                let (x, y) = (a.title.chars(), b.title.chars());
                x.flat_map(char::to_lowercase)
                    .cmp(y.flat_map(char::to_lowercase))
                    .then(newest)
            }
        }
    }
}

/// How much a status needs looking at, most first.
fn trouble(status: SessionStatus) -> u8 {
    match status {
        SessionStatus::Failed => 0,
        SessionStatus::Creating => 1,
        SessionStatus::Busy => 2,
        SessionStatus::Ready => 3,
        SessionStatus::Idle => 4,
        SessionStatus::Suspended => 5,
        SessionStatus::Dead => 6,
    }
}

#[derive(Default)]
pub struct SessionList {
    /// Newest first (ids are time-ordered): the index by id.
    all: Vec<Session>,
    filter: Filter,
    sort: SortKey,
    /// Under another sort key than newest: every session (as its place in `all`) in that
    /// order. Kept in order as sessions change: a change moves one entry (two binary
    /// searches), never a re-sort of everything; a new session shifts the places after it.
    order: Option<Vec<u32>>,
    /// Under a filter: the places in `all` of the sessions shown, in the sort order. A new
    /// filter walks `order` (or `all`) once; nothing is sorted again.
    visible: Option<Vec<u32>>,
    selected: Option<Uuid>,
    /// Where the selected row was last seen: the cursor stays there when its session goes.
    selected_at: std::cell::Cell<usize>,
    /// How many of `all` have each status (indexed by the status's declaration order).
    by_status: [usize; SessionStatus::ALL.len()],
    /// How many sessions have an agent waiting for a person's answer.
    waiting: usize,
    /// How many sessions each runtime has a sandbox of (`-` for none yet).
    by_runtime: std::collections::BTreeMap<String, usize>,
    /// How many sessions say which of several servers holds them.
    on_servers: usize,
    /// The filters typed before this one and what they showed, newest last, while no session
    /// changed: taking a character back shows what it showed at once.
    typed: Vec<(Filter, Vec<u32>)>,
    /// Where the list stood in the last frame.
    pub shown: ListShown,
    /// Leave ended sessions out unless the filter asks for them (the cockpit's default; see
    /// [`SessionList::show_ended`]).
    hide_ended: bool,
}

/// How many earlier filters are kept while typing.
const TYPED: usize = 32;

fn place(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl SessionList {
    fn position(&self, id: Uuid) -> Result<usize, usize> {
        self.all.binary_search_by(|s| id.cmp(&s.id))
    }

    pub fn replace_all(&mut self, mut sessions: Vec<Session>) {
        sessions.sort_by_key(|s| std::cmp::Reverse(s.id));
        self.by_status = Default::default();
        self.waiting = 0;
        self.by_runtime.clear();
        self.on_servers = 0;
        for s in &sessions {
            self.on_servers += usize::from(s.server.is_some());
            self.by_status[s.status as usize] += 1;
            self.waiting += usize::from(s.waiting > 0);
            *self
                .by_runtime
                .entry(runtime_of(s).to_string())
                .or_default() += 1;
        }
        self.all = sessions;
        self.order = None;
        self.typed.clear();
        self.refilter();
    }

    /// Adds a page of sessions older than those held (the rest of a first load). One that is
    /// already here (it changed since the page was read) stays as it is.
    pub fn add_older(&mut self, page: Vec<Session>) {
        if page.is_empty() {
            return;
        }
        let mut all = std::mem::take(&mut self.all);
        all.extend(page);
        // stable: of two with one id, the one held comes first and is kept
        all.sort_by_key(|s| std::cmp::Reverse(s.id));
        all.dedup_by_key(|s| s.id);
        self.replace_all(all);
    }

    /// The places shown, in order, when that is not simply `all`.
    fn shown(&self) -> Option<&[u32]> {
        self.visible.as_deref().or(self.order.as_deref())
    }

    /// Where `s` is in `places` (`Ok`), or where it would go (`Err`).
    fn search(&self, places: &[u32], s: &Session) -> Result<usize, usize> {
        places.binary_search_by(|&p| match self.all.get(p as usize) {
            Some(other) => self.sort.cmp(other, s),
            None => Ordering::Less,
        })
    }

    /// Takes the session at `i` out of `places` (if there).
    fn take_out(&self, places: &mut Vec<u32>, i: usize) {
        if let Ok(at) = self.search(places, &self.all[i]) {
            places.remove(at);
        }
    }

    /// Puts the session at `i` into `places`, in order.
    fn put_in(&self, places: &mut Vec<u32>, i: usize) {
        let at = self.search(places, &self.all[i]).unwrap_or_else(|at| at);
        places.insert(at, place(i));
    }

    /// Adds or updates one session; the selection stays on the same session.
    pub fn upsert(&mut self, session: Session) {
        self.typed.clear();
        let (mut order, mut visible) = (self.order.take(), self.visible.take());
        let i = match self.position(session.id) {
            Ok(i) => {
                let old = &mut self.by_status[self.all[i].status as usize];
                *old = old.saturating_sub(1);
                let runtime = runtime_of(&self.all[i]).to_string();
                if let Some(n) = self.by_runtime.get_mut(&runtime) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.by_runtime.remove(&runtime);
                    }
                }
                self.waiting = self
                    .waiting
                    .saturating_sub(usize::from(self.all[i].waiting > 0));
                self.on_servers = self
                    .on_servers
                    .saturating_sub(usize::from(self.all[i].server.is_some()));
                if let Some(o) = &mut order {
                    self.take_out(o, i);
                }
                if let Some(v) = &mut visible
                    && self.filter.matches(&self.all[i])
                {
                    self.take_out(v, i);
                }
                self.all[i] = session;
                i
            }
            Err(i) => {
                // the places from `i` on move one down
                let at = place(i);
                for p in order.iter_mut().chain(visible.iter_mut()).flatten() {
                    if *p >= at {
                        *p += 1;
                    }
                }
                self.all.insert(i, session);
                i
            }
        };
        self.by_status[self.all[i].status as usize] += 1;
        self.waiting += usize::from(self.all[i].waiting > 0);
        self.on_servers += usize::from(self.all[i].server.is_some());
        *self
            .by_runtime
            .entry(runtime_of(&self.all[i]).to_string())
            .or_default() += 1;
        if let Some(o) = &mut order {
            self.put_in(o, i);
        }
        if let Some(v) = &mut visible
            && self.filter.matches(&self.all[i])
        {
            self.put_in(v, i);
        }
        self.order = order;
        self.visible = visible;
    }

    pub fn get(&self, id: Uuid) -> Option<&Session> {
        self.position(id).ok().map(|i| &self.all[i])
    }

    /// Filters by `text`. Typing is cheap: a filter within the last one looks only at what
    /// that one showed, and going back to an earlier one (a character taken back) shows what
    /// it showed; anything else is one pass over every session.
    pub fn set_filter(&mut self, text: &str) {
        let filter = self.parse(text);
        if filter == self.filter {
            return;
        }
        let before = std::mem::replace(&mut self.filter, filter);
        let shown = self.visible.take();
        if let Some(at) = self.typed.iter().rposition(|(f, _)| *f == self.filter) {
            let (_, places) = self.typed.remove(at);
            self.visible = Some(places);
        } else if let Some(places) = shown.as_ref().filter(|_| self.filter.within(&before)) {
            self.visible = Some(
                places
                    .iter()
                    .copied()
                    .filter(|&p| {
                        self.all
                            .get(p as usize)
                            .is_some_and(|s| self.filter.matches(s))
                    })
                    .collect(),
            );
        } else {
            self.refilter();
        }
        if self.filter.is_empty() {
            self.visible = None;
        }
        if let Some(places) = shown {
            if self.typed.len() == TYPED {
                self.typed.remove(0);
            }
            self.typed.push((before, places));
        }
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    fn parse(&self, text: &str) -> Filter {
        if self.hide_ended {
            Filter::hiding_ended(text)
        } else {
            Filter::parse(text)
        }
    }

    /// A list that leaves ended sessions out unless a filter asks for them.
    pub fn hiding_ended() -> SessionList {
        let mut list = SessionList::default();
        list.show_ended(false);
        list
    }

    /// Lists ended sessions with the rest, or leaves them out unless a filter asks for them.
    pub fn show_ended(&mut self, show: bool) {
        self.hide_ended = !show;
        let text = self.filter.text.clone();
        self.filter = Filter::default();
        self.typed.clear();
        self.set_filter(&text);
        if self.filter.is_empty() {
            self.refilter();
        }
    }

    /// The ended sessions the filter's own hiding of them leaves out: `Some(n)` with nothing
    /// typed (all of them: kept counted), `Some(None)` under a typed filter (counting those
    /// it would show would take a pass over every session each frame), `None` when none are
    /// hidden.
    pub fn ended_hidden(&self) -> Option<Option<usize>> {
        let n = self.count(SessionStatus::Dead);
        if !self.filter.hides_ended || n == 0 {
            return None;
        }
        Some(self.filter.only_hides_ended().then_some(n))
    }

    pub fn sort(&self) -> SortKey {
        self.sort
    }

    /// Orders the list by `key`; the selection stays on the same session.
    pub fn set_sort(&mut self, key: SortKey) {
        if key != self.sort {
            self.sort = key;
            self.order = None;
            self.typed.clear();
        }
        self.refilter();
    }

    /// Brings `order` and `visible` in line with the sort key and the filter: the order is
    /// made only when the key changed; a filter is one pass over it.
    fn refilter(&mut self) {
        if self.sort == SortKey::Newest {
            self.order = None;
        } else if self.order.is_none() {
            let mut order: Vec<u32> = (0..self.all.len()).map(place).collect();
            order.sort_by(|&a, &b| self.sort.cmp(&self.all[a as usize], &self.all[b as usize]));
            self.order = Some(order);
        }
        self.visible = if self.filter.is_empty() {
            None
        } else {
            // One pass over `all` in memory order, then one over the order.
            let matched: Vec<bool> = self.all.iter().map(|s| self.filter.matches(s)).collect();
            let hit = |p: &&u32| matched.get(**p as usize).copied().unwrap_or(false);
            Some(match &self.order {
                Some(order) => order.iter().filter(hit).copied().collect(),
                None => (0..self.all.len())
                    .filter(|&i| matched[i])
                    .map(place)
                    .collect(),
            })
        };
    }

    pub fn len(&self) -> usize {
        self.shown().map_or(self.all.len(), <[u32]>::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn total(&self) -> usize {
        self.all.len()
    }

    pub fn at(&self, i: usize) -> Option<&Session> {
        match self.shown() {
            None => self.all.get(i),
            Some(v) => v.get(i).and_then(|&p| self.all.get(p as usize)),
        }
    }

    /// The selected row's index among the visible ones (where it would be, or the last row,
    /// when the selected session is filtered out; the first with no selection).
    pub fn selected_index(&self) -> usize {
        let last = self.len().saturating_sub(1);
        let Some(id) = self.selected else { return 0 };
        let Ok(i) = self.position(id) else {
            return self.selected_at.get().min(last);
        };
        let at = match self.shown() {
            None => i,
            Some(v) => match self.search(v, &self.all[i]) {
                Ok(at) => at,
                Err(at) => at.min(last),
            },
        };
        self.selected_at.set(at);
        at
    }

    /// Puts the cursor on session `id` (the one worked on), wherever the list shows it.
    pub fn select(&mut self, id: Uuid) {
        self.selected = Some(id);
    }

    /// Makes the selection the session the cursor is on: a selected session hidden by the
    /// filter (the cursor then shows its neighbour) gives way to the one acted on.
    pub fn pin(&mut self) {
        let i = self.selected_index();
        if let Some(id) = self.at(i).map(|s| s.id) {
            self.selected = Some(id);
        }
    }

    pub fn selected(&self) -> Option<&Session> {
        self.at(self.selected_index())
    }

    pub fn select_index(&mut self, i: usize) {
        let last = self.len().saturating_sub(1);
        self.selected = self.at(i.min(last)).map(|s| s.id);
    }

    pub fn move_by(&mut self, delta: isize) {
        let i = self.selected_index() as isize + delta;
        self.select_index(i.max(0) as usize);
    }

    /// How many sessions of each status (for the title bar).
    /// How many sessions have an agent waiting for a person's answer.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    pub fn count(&self, status: SessionStatus) -> usize {
        self.by_status[status as usize]
    }

    /// Selects the next session shown (after the selected one, or before it) whose agent waits
    /// for a person, going round; whether there is one.
    pub fn select_waiting(&mut self, forward: bool) -> bool {
        let n = self.len();
        let from = self.selected_index();
        let found = (1..=n)
            .map(|step| match forward {
                true => (from + step) % n,
                false => (from + n - step % n) % n,
            })
            .find(|&i| self.at(i).is_some_and(|s| s.waiting > 0));
        match found {
            Some(i) => {
                self.select_index(i);
                true
            }
            None => false,
        }
    }

    /// Whether the sessions come from several servers (then the list says which is which).
    pub fn from_servers(&self) -> bool {
        self.on_servers > 0
    }

    /// Whether sessions of more than one runtime are held (then the list says which is which).
    pub fn mixed_runtimes(&self) -> bool {
        self.by_runtime
            .keys()
            .filter(|r| r.as_str() != NO_RUNTIME)
            .count()
            > 1
    }
}

/// What the RUNTIME column shows of a session with no sandbox yet.
const NO_RUNTIME: &str = "-";

/// The runtime a session's sandbox is on, as the list shows it.
fn runtime_of(s: &Session) -> &str {
    s.runtime.as_deref().unwrap_or(NO_RUNTIME)
}

impl Screen for SessionList {
    fn scope(&self) -> Scope {
        Scope::Sessions
    }

    fn on_action(&mut self, action: Action, cx: &mut Cx<'_>) -> Option<Vec<Effect>> {
        match action {
            Action::Bottom | Action::Follow => self.select_index(usize::MAX),
            Action::NextWaiting | Action::PreviousWaiting => {
                let forward = action == Action::NextWaiting;
                if !self.select_waiting(forward) {
                    cx.say("no agent waits for a person");
                }
            }
            Action::Sort => {
                let key = self.sort().next();
                self.set_sort(key);
                cx.say(format!("sorted by {}", key.name()));
            }
            _ => return None,
        }
        Some(vec![])
    }

    fn scroll(&mut self, delta: isize) {
        match delta {
            isize::MIN => self.select_index(0),
            delta => self.move_by(delta),
        }
    }

    fn page(&self) -> usize {
        self.shown.page()
    }

    fn click(&mut self, y: u16) -> bool {
        match self.shown.row_at(y).filter(|i| *i < self.len()) {
            Some(i) => {
                self.select_index(i);
                true
            }
            None => false,
        }
    }

    fn draw(&self, f: &mut Frame, app: &App, area: Rect, now: chrono::DateTime<chrono::Utc>) {
        render_sessions(f, app, self, area, now);
    }
}

/// What is wrong with a session, in full, for the line under the list when it is selected: an
/// agent waiting for a person, or a failure with what to do about it. `answerable`: what it
/// asks is on screen to be answered from the list (the preview).
fn trouble_lines(app: &App, s: &Session, answerable: bool) -> Option<Vec<Line<'static>>> {
    let t = &app.theme;
    let key = |action: Action| app.keymap.key_for(action).unwrap_or("?").to_string();
    if s.waiting > 0 {
        let asks = if s.waiting == 1 {
            "something".to_string()
        } else {
            format!("{} things", s.waiting)
        };
        let how = if answerable {
            format!(
                "{} allow, {} always, {} reject here, or {} opens its transcript",
                key(Action::Allow),
                key(Action::AllowAlways),
                key(Action::Reject),
                key(Action::Attach)
            )
        } else {
            format!("{} opens its transcript to answer", key(Action::Attach))
        };
        return Some(vec![Line::from(Span::styled(
            format!(
                "? {} waits for a person to answer {asks}: {how}",
                sanitize::line(&s.title),
            ),
            t.warning,
        ))]);
    }
    if s.status != SessionStatus::Failed {
        return None;
    }
    let reason = s
        .failure_reason
        .as_deref()
        .unwrap_or("no reason was recorded");
    Some(vec![
        Line::from(Span::styled(format!("! {reason}"), t.error)),
        Line::from(vec![
            Span::raw(failure_advice(reason)),
            Span::styled(format!(" ({} diagnose)", key(Action::Diagnose)), t.muted),
        ]),
    ])
}

/// The selected session without attaching: what is wrong with it (a failure and what to do,
/// what its agent asks), then its last lines as they stream.
fn render_preview(
    f: &mut Frame,
    app: &App,
    s: &Session,
    t: &super::transcript::Transcript,
    area: Rect,
) {
    // Its status as the list says it: waiting for a person first.
    let (status, style) = if s.waiting > 0 {
        ("? waiting".to_string(), app.theme.warning)
    } else {
        (
            format!("{} {}", glyph(s.status), s.status.word()),
            status_style(app, s.status),
        )
    };
    let title = format!(
        " {status} · {} · {} ",
        sanitize::line(&s.title),
        s.short_id()
    );
    // what it cost so far, against its budget from 80% on
    let mut title = vec![Span::styled(title, style)];
    if s.usage.tokens() > 0 || s.usage.unpriced > 0 {
        let cost = match cost_cell(s) {
            unknown if unknown == "unknown" => "price unknown".to_string(),
            cost => cost,
        };
        title.push(Span::styled(
            format!("{cost} "),
            budget_style(app, s).unwrap_or(app.theme.muted),
        ));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border)
        .title(Line::from(title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let width = usize::from(inner.width).max(1);
    let mut lines: Vec<Line<'static>> = Vec::new();
    if let Some(trouble) = trouble_lines(app, s, !t.asks.is_empty() && !app.keymap.read_only()) {
        lines.extend(wrap_clean(&trouble, width));
    }
    let asked: Vec<Line> = t
        .asks
        .iter()
        .map(|a| {
            Line::from(Span::styled(
                format!("  {}", sanitize::line(&a.summary())),
                app.theme.warning,
            ))
        })
        .collect();
    lines.extend(wrap_clean(&asked, width));
    if !lines.is_empty() {
        lines.push(Line::default());
    }
    let room = usize::from(inner.height).saturating_sub(lines.len());
    if t.messages().is_empty() {
        let said = if t.loaded {
            "No messages yet."
        } else {
            "Reading its last messages…"
        };
        lines.push(Line::from(Span::styled(said, app.theme.muted)));
    } else if room > 0 {
        lines.extend(t.window(inner.width, &app.theme, room).lines);
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// A phase as the list says it: a session ended on purpose is `ended`, as its status says.
fn phase_word(phase: crate::model::Phase) -> &'static str {
    match phase {
        crate::model::Phase::Dead => "ended",
        other => other.as_str(),
    }
}

/// From this width the list shows the selected session's preview: under the list, and beside
/// it from [`PREVIEW_BESIDE`].
pub const PREVIEW_MIN: u16 = 100;
pub const PREVIEW_BESIDE: u16 = 160;

fn render_sessions(
    f: &mut Frame,
    app: &App,
    list: &SessionList,
    area: Rect,
    now: chrono::DateTime<chrono::Utc>,
) {
    // The selected session's preview takes 40% of the room, beside the list or under it.
    let chosen = list.at(list.selected_index());
    let preview = app
        .preview
        .as_ref()
        .filter(|_| app.preview_on && area.width >= PREVIEW_MIN)
        .and_then(|p| chosen.filter(|s| s.id == p.session).map(|s| (s, p)));
    app.preview_shown.set(preview.is_some());
    let area = match preview {
        Some((s, p)) => {
            let [list_area, preview_area] = if area.width >= PREVIEW_BESIDE {
                Layout::horizontal([Constraint::Min(60), Constraint::Percentage(40)]).areas(area)
            } else {
                Layout::vertical([Constraint::Min(6), Constraint::Percentage(40)]).areas(area)
            };
            render_preview(f, app, s, p, preview_area);
            list_area
        }
        None => area,
    };
    let filter = &list.filter().text;
    let hidden = match list.ended_hidden() {
        None => String::new(),
        Some(Some(n)) => format!(" · {n} ended hidden"),
        Some(None) => " · ended hidden".to_string(),
    };
    let title = if app.loading && list.total() > 0 {
        format!(" Sessions ({} so far, loading…) ", list.len())
    } else if filter.is_empty() {
        format!(" Sessions ({}{hidden}) ", list.len())
    } else {
        format!(
            " Sessions ({} of {}, filter: {}{hidden}) ",
            list.len(),
            list.total(),
            sanitize::line(filter)
        )
    };
    let title = match list.sort() {
        SortKey::Newest => title,
        key => format!("{title}· sorted by {} ", key.name()),
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border)
        .title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if list.is_empty() {
        let text = if app.loading {
            "Loading sessions…".to_string()
        } else if list.total() == 0 {
            "No sessions yet. Press n to start one.".to_string()
        } else if let Some(Some(n)) = list.ended_hidden() {
            format!(
                "No live session: {n} ended (hidden; / status:ended shows them). Press n to start one."
            )
        } else {
            "No session matches the filter. Press / to change it.".to_string()
        };
        f.render_widget(Paragraph::new(Span::styled(text, app.theme.muted)), inner);
        return;
    }
    // The selected session's trouble, in full, under the table: the failure and what to do,
    // or that the agent waits for a person.
    let selected = list.selected_index();
    // (the preview says it when it shows)
    let detail = match preview {
        Some(_) => None,
        None => list.at(selected).and_then(|s| trouble_lines(app, s, false)),
    };
    let inner = match &detail {
        Some(lines) => {
            let lines = wrap_clean(lines, usize::from(inner.width).max(1));
            let height = (lines.len() as u16 + 1).min(inner.height / 3).max(2);
            let [table, below] =
                Layout::vertical([Constraint::Min(2), Constraint::Length(height)]).areas(inner);
            let rule = Block::default()
                .borders(Borders::TOP)
                .border_style(app.theme.border);
            f.render_widget(Paragraph::new(lines).block(rule), below);
            table
        }
        None => inner,
    };
    // Only the rows that fit are built: instant at any number of sessions.
    let height = inner.height.saturating_sub(1) as usize;
    list.shown.rows.set(height);
    list.shown.y.set(inner.y + 1);
    let offset = scrolled_to(list.shown.top.get(), selected, height, list.len());
    list.shown.top.set(offset);
    let on_screen = offset..(offset + height).min(list.len());
    // Narrow terminals (80 columns over SSH) keep what matters most.
    let wide = inner.width >= 110;
    // PHASE has a column of its own only where HEALTH (a failure's reason) still has room;
    // else HEALTH shows the phase when it has nothing else to say.
    let phase_column = inner.width >= 150;
    let (mut header, mut widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec![
                "STATUS", "AGENT", "TEAM", "TITLE", "PHASE", "HEALTH", "AGE", "ACTIVE", "COST",
                "SUSPENDS",
            ],
            vec![
                Constraint::Length(11),
                Constraint::Length(10),
                Constraint::Length(8),
                Constraint::Fill(1),
                Constraint::Length(16),
                Constraint::Fill(1),
                Constraint::Length(4),
                Constraint::Length(6),
                Constraint::Length(10),
                Constraint::Length(8),
            ],
        )
    } else {
        (
            // the phase's detail or the failure says more than the phase in one column
            vec!["STATUS", "AGENT", "TITLE", "HEALTH", "SUSPENDS"],
            vec![
                Constraint::Length(11),
                Constraint::Length(10),
                Constraint::Fill(1),
                Constraint::Fill(1),
                Constraint::Length(8),
            ],
        )
    };
    // COST from 130 columns (narrower, the preview and the transcript's title say it).
    let cost_column = inner.width >= 130;
    if wide && !cost_column {
        header.remove(8);
        widths.remove(8);
    }
    if wide && !phase_column {
        header.remove(4);
        widths.remove(4);
    }
    // Sessions of several runtimes on one store: each says which (after AGENT).
    let mixed = list.mixed_runtimes();
    if mixed {
        header.insert(2, "RUNTIME");
        widths.insert(2, Constraint::Length(10));
    }
    // Sessions of several servers (a cockpit over `[[servers]]`): each says where, first.
    let servers = list.from_servers();
    if servers {
        let longest = on_screen
            .clone()
            .filter_map(|i| list.at(i))
            .filter_map(|s| s.server.as_deref())
            .map(|n| cells::width(&sanitize::line(n)))
            .max()
            .unwrap_or(0);
        header.insert(1, "SERVER");
        widths.insert(
            1,
            Constraint::Length(u16::try_from(longest.clamp(6, 14)).unwrap_or(6)),
        );
    }
    // TITLE takes what the longest title on screen needs, up to half of the room the two
    // share; HEALTH (where a failure's reason is) takes the rest.
    let title_at = header.iter().position(|h| *h == "TITLE").unwrap_or(2);
    let shared: usize = column_widths(&widths, inner.width)
        .iter()
        .zip(&widths)
        .filter(|(_, c)| matches!(c, Constraint::Fill(_)))
        .map(|(w, _)| *w)
        .sum();
    let longest = on_screen
        .clone()
        .filter_map(|i| list.at(i))
        .map(|s| cells::width(&sanitize::line(&s.title)))
        .max()
        .unwrap_or(0)
        .max("TITLE".len());
    // HEALTH needs what its longest text on screen needs, and has at least half when that is
    // more (a failure's reason matters most); TITLE takes the rest.
    let health_needs = on_screen
        .clone()
        .filter_map(|i| list.at(i))
        .map(
            |s| match s.phase_detail.as_deref().or(s.failure_reason.as_deref()) {
                Some(said) => cells::width(&sanitize::line(said)),
                None => phase_word(s.phase).len(),
            },
        )
        .max()
        .unwrap_or(0)
        .max("HEALTH".len());
    let title_room = shared.saturating_sub(health_needs.min(shared / 2));
    let title_width = longest.min(title_room).max(shared.min(12));
    widths[title_at] = Constraint::Length(u16::try_from(title_width).unwrap_or(u16::MAX));
    let room = column_widths(&widths, inner.width);
    let cost_at = header.iter().position(|h| *h == "COST");
    let rows: Vec<Row> = on_screen
        .filter_map(|i| list.at(i).map(|s| (i, s)))
        .map(|(i, s)| {
            let health = s
                .phase_detail
                .as_deref()
                .or(s.failure_reason.as_deref())
                .map(sanitize::line)
                .unwrap_or_default();
            // An agent waiting for a person says so first, in words and a glyph.
            let status = if s.waiting > 0 {
                Cell::from("? waiting").style(app.theme.warning)
            } else {
                Cell::from(format!("{} {}", glyph(s.status), s.status.word()))
                    .style(status_style(app, s.status))
            };
            let mut texts: Vec<String> = if wide {
                let mut texts = vec![
                    sanitize::line(&s.agent_id),
                    sanitize::line(&s.team),
                    sanitize::line(&s.title),
                    phase_word(s.phase).to_string(),
                    health,
                    age(s.created_at, now),
                    age(s.last_activity_at, now),
                    cost_cell(s),
                    countdown(s, now),
                ];
                if !cost_column {
                    texts.remove(7);
                }
                if !phase_column {
                    let phase = texts.remove(3);
                    if texts[3].is_empty() {
                        texts[3] = phase;
                    }
                }
                texts
            } else {
                vec![
                    sanitize::line(&s.agent_id),
                    sanitize::line(&s.title),
                    if health.is_empty() {
                        phase_word(s.phase).to_string()
                    } else {
                        health
                    },
                    countdown(s, now),
                ]
            };
            if mixed {
                texts.insert(1, sanitize::line(runtime_of(s)));
            }
            if servers {
                texts.insert(0, sanitize::line(s.server.as_deref().unwrap_or("-")));
            }
            let cost_style = budget_style(app, s);
            let cells = std::iter::once(status).chain(
                texts
                    .iter()
                    .zip(room.iter().skip(1))
                    .enumerate()
                    .map(|(at, (t, w))| {
                        let cell = Cell::from(cells::ellipsize(t, *w).into_owned());
                        match cost_style {
                            Some(style) if Some(at + 1) == cost_at => cell.style(style),
                            _ => cell,
                        }
                    }),
            );
            let row = Row::new(cells);
            if i == selected {
                row.style(app.theme.selected)
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(header).style(app.theme.muted.add_modifier(Modifier::BOLD));
    let table = Table::new(rows, widths).header(header).column_spacing(1);
    f.render_widget(table, inner);
}

/// A session's cost in a list's cell: `$0.42`, `$0.42+?` (some at an unknown price), `unknown`,
/// `-` before any token; with the share of its budget from 80% on (`$4.15 83%`).
pub(crate) fn cost_cell(s: &Session) -> String {
    let u = &s.usage;
    let cost = match (u.unpriced > 0, u.cost > 0.0) {
        (true, true) => format!("{}+?", crate::model::usd(u.cost)),
        (true, false) => "unknown".to_string(),
        (false, _) if u.tokens() == 0 => "-".to_string(),
        (false, _) => crate::model::usd(u.cost),
    };
    match s.budget_spent() {
        Some(spent) if spent >= crate::model::BUDGET_WARN => {
            format!("{cost} {:.0}%", (spent * 100.0).min(999.0))
        }
        _ => cost,
    }
}

/// How a session's cost reads against its budget: a warning from 80%, an error once spent.
pub(crate) fn budget_style(app: &App, s: &Session) -> Option<ratatui::style::Style> {
    match s.budget_spent() {
        Some(spent) if spent >= 1.0 => Some(app.theme.error),
        Some(spent) if spent >= crate::model::BUDGET_WARN => Some(app.theme.warning),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Phase;

    pub fn session(i: u64, agent: &str, status: SessionStatus) -> Session {
        let t = chrono::DateTime::from_timestamp(1_790_000_000 + i as i64, 0).unwrap_or_default();
        Session {
            id: Uuid::from_u128(i as u128),
            agent_id: agent.into(),
            team: if i.is_multiple_of(2) {
                "red".into()
            } else {
                "blue".into()
            },
            title: format!("task {i}"),
            status,
            phase: Phase::Ready,
            phase_detail: None,
            runtime: Some("local".into()),
            sandbox_ref: Some(format!("sbx-{i}")),
            harness_session_id: None,
            failure_reason: None,
            env_keys: vec![],
            last_message_seq: 0,
            last_event_seq: 0,
            waiting: 0,
            parent_id: None,
            fork_seq: None,
            created_at: t,
            updated_at: t,
            last_activity_at: t,
            idle_deadline: None,
            stopped_at: None,
            command_seq: 0,
            usage: Default::default(),
            budget_usd: None,
            server: None,
        }
    }

    #[test]
    fn updates_keep_order_and_selection() {
        let mut list = SessionList::default();
        list.replace_all(
            (1..=5)
                .map(|i| session(i, "coder", SessionStatus::Ready))
                .collect(),
        );
        assert_eq!(
            list.at(0).map(|s| s.title.as_str()),
            Some("task 5"),
            "newest first"
        );
        list.select_index(2);
        assert_eq!(list.selected().map(|s| s.title.as_str()), Some("task 3"));
        list.upsert(session(6, "coder", SessionStatus::Creating));
        assert_eq!(
            list.selected().map(|s| s.title.as_str()),
            Some("task 3"),
            "selection follows the session"
        );
        let mut changed = session(3, "coder", SessionStatus::Failed);
        changed.title = "renamed".into();
        list.upsert(changed);
        assert_eq!(list.len(), 6);
        assert_eq!(list.selected().map(|s| s.title.as_str()), Some("renamed"));
        for status in SessionStatus::ALL {
            assert_eq!(
                list.count(*status),
                list.all.iter().filter(|s| s.status == *status).count(),
                "{status}"
            );
        }
        assert_eq!(list.count(SessionStatus::Ready), 4);
        assert_eq!(list.count(SessionStatus::Failed), 1);
        list.replace_all(vec![session(9, "coder", SessionStatus::Busy)]);
        assert_eq!(list.count(SessionStatus::Ready), 0);
        assert_eq!(list.count(SessionStatus::Busy), 1);
    }

    /// What the list shows, as titles.
    fn shown(list: &SessionList) -> Vec<String> {
        (0..list.len())
            .filter_map(|i| list.at(i).map(|s| s.title.clone()))
            .collect()
    }

    #[test]
    fn sort_keys_order_the_list_and_keep_the_selection() {
        let mut list = SessionList::default();
        let mut sessions: Vec<Session> = (1..=4)
            .map(|i| session(i, "coder", SessionStatus::Idle))
            .collect();
        sessions[1].status = SessionStatus::Failed;
        sessions[2].agent_id = "alpha".into();
        sessions[0].title = "Zeta".into();
        sessions[3].title = "alpha".into();
        list.replace_all(sessions);
        list.select_index(1); // task 3
        list.set_sort(SortKey::Status);
        assert_eq!(shown(&list), ["task 2", "alpha", "task 3", "Zeta"]);
        assert_eq!(list.selected().map(|s| s.title.as_str()), Some("task 3"));
        list.set_sort(SortKey::Agent);
        assert_eq!(shown(&list), ["task 3", "alpha", "task 2", "Zeta"]);
        list.set_sort(SortKey::Title);
        assert_eq!(shown(&list), ["alpha", "task 2", "task 3", "Zeta"]);
        // activity: a session that just did something goes to the top
        list.set_sort(SortKey::Activity);
        let mut busy = session(1, "coder", SessionStatus::Busy);
        busy.title = "Zeta".into();
        busy.last_activity_at += chrono::Duration::seconds(60);
        list.upsert(busy);
        assert_eq!(shown(&list)[0], "Zeta");
        assert_eq!(list.selected().map(|s| s.title.as_str()), Some("task 3"));
        assert_eq!(SortKey::parse("activity"), Some(SortKey::Activity));
        assert_eq!(SortKey::Title.next(), SortKey::Newest);
    }

    /// A small deterministic generator (xorshift): the same numbers below `n` every run.
    fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    #[test]
    fn the_order_stays_right_through_any_changes() {
        let mut next = numbers(0x2545_f491_4f6c_dd1d);
        let statuses = SessionStatus::ALL;
        for (key, filter) in [
            (SortKey::Status, ""),
            (SortKey::Activity, "team:red"),
            (SortKey::Title, ""),
            (SortKey::Agent, "status:i"),
            (SortKey::Newest, "agent:b"),
        ] {
            let (mut key, mut filter) = (key, filter);
            let mut list = SessionList::default();
            list.set_sort(key);
            list.set_filter(filter);
            let mut reference: Vec<Session> = Vec::new();
            for step in 0..400 {
                // Midway the filter and then the sort key change too.
                if step == 200 {
                    filter = if filter.is_empty() { "e" } else { "" };
                    list.set_filter(filter);
                }
                if step == 300 {
                    key = key.next();
                    list.set_sort(key);
                }
                let id = next(60) + 1;
                let mut s = session(
                    id,
                    ["a", "b", "c"][next(3) as usize],
                    statuses[next(statuses.len() as u64) as usize],
                );
                s.title = format!("t{}{}", next(20), ["", " Été", " EXPORT"][next(3) as usize]);
                s.last_activity_at += chrono::Duration::seconds(next(1000) as i64);
                reference.retain(|r| r.id != s.id);
                reference.push(s.clone());
                list.upsert(s);
                if step % 40 == 0 || step == 399 {
                    let f = Filter::parse(filter);
                    let mut want: Vec<&Session> =
                        reference.iter().filter(|r| f.matches(r)).collect();
                    want.sort_by(|a, b| key.cmp(a, b));
                    let want: Vec<Uuid> = want.iter().map(|s| s.id).collect();
                    let got: Vec<Uuid> = (0..list.len())
                        .filter_map(|i| list.at(i).map(|s| s.id))
                        .collect();
                    assert_eq!(got, want, "{key:?} {filter:?} at step {step}");
                }
            }
        }
    }

    /// Typing in the filter (on, back, on again), with sessions changing now and then and the
    /// sort key too: what is shown is always what filtering everything afresh shows.
    #[test]
    fn typing_a_filter_shows_what_filtering_afresh_would() {
        let mut next = numbers(0x9e37_79b9_7f4a_7c15);
        let mut list = SessionList::default();
        let mut reference: Vec<Session> = Vec::new();
        let statuses = SessionStatus::ALL;
        let upsert = |list: &mut SessionList, reference: &mut Vec<Session>, id: u64, r: u64| {
            let mut s = session(
                id,
                ["ab", "ba", "cab"][(r % 3) as usize],
                statuses[(r % 7) as usize],
            );
            s.title = ["t ab", "t e", "AB e", "x"][(r % 4) as usize].to_string();
            reference.retain(|x| x.id != s.id);
            reference.push(s.clone());
            list.upsert(s);
        };
        for id in 1..=40 {
            let r = next(1000);
            upsert(&mut list, &mut reference, id, r);
        }
        let mut text = String::new();
        let mut fast = 0;
        for step in 0..2000 {
            match next(20) {
                0..=8 => text.push(['a', 'b', 'e', ' ', 't', ':', 'x'][next(7) as usize]),
                9..=15 => {
                    text.pop();
                }
                16..=18 => {
                    let (id, r) = (next(60) + 1, next(1000));
                    upsert(&mut list, &mut reference, id, r);
                }
                _ => list.set_sort(list.sort().next()),
            }
            if text.len() > 6 {
                text.clear();
            }
            fast += usize::from(!list.typed.is_empty());
            list.set_filter(&text);
            let f = Filter::parse(&text);
            let mut want: Vec<&Session> = reference.iter().filter(|r| f.matches(r)).collect();
            want.sort_by(|a, b| list.sort().cmp(a, b));
            let want: Vec<Uuid> = want.iter().map(|s| s.id).collect();
            let got: Vec<Uuid> = (0..list.len())
                .filter_map(|i| list.at(i).map(|s| s.id))
                .collect();
            assert_eq!(got, want, "{text:?} {:?} at step {step}", list.sort());
        }
        assert!(fast > 300, "earlier filters were kept and used ({fast})");
    }

    #[test]
    fn filters_by_words_and_pairs() {
        let mut list = SessionList::default();
        list.replace_all(vec![
            session(1, "coder", SessionStatus::Ready),
            session(2, "reviewer", SessionStatus::Failed),
            session(3, "coder", SessionStatus::Failed),
        ]);
        list.set_filter("agent:coder status:failed");
        assert_eq!(list.len(), 1);
        assert_eq!(list.at(0).map(|s| s.title.as_str()), Some("task 3"));
        list.set_filter("review");
        assert_eq!(list.len(), 1);
        // Case does not matter, in ASCII and beyond it.
        list.set_filter("REVIEW Task");
        assert_eq!(list.len(), 1);
        let mut cafe = session(4, "coder", SessionStatus::Idle);
        cafe.title = "Écrire au Café".into();
        list.upsert(cafe);
        list.set_filter("écrire CAFÉ");
        assert_eq!(list.at(0).map(|s| s.id), Some(Uuid::from_u128(4)));
        assert_eq!(list.len(), 1);
        list.set_filter(&Uuid::from_u128(4).to_string().to_uppercase());
        assert_eq!(list.len(), 1, "ids match too");
        list.set_filter("title:écrire agent:cod");
        assert_eq!(list.len(), 1);
        list.set_filter("nosuch:key");
        assert_eq!(list.len(), 0);
        list.set_filter("");
        assert_eq!(list.len(), 4);
        // a session leaving the filter on update
        list.set_filter("status:failed");
        list.upsert(session(3, "coder", SessionStatus::Ready));
        assert_eq!(list.len(), 1);
    }

    /// A `-` leaves out what it matches, word or pair; typed a key at a time, each step shows
    /// what filtering afresh would.
    #[test]
    fn a_minus_leaves_out_what_it_matches() {
        let mut list = SessionList::default();
        list.replace_all(vec![
            session(1, "coder", SessionStatus::Idle),
            session(2, "reviewer", SessionStatus::Dead),
            session(3, "coder", SessionStatus::Failed),
        ]);
        list.set_filter("-status:ended");
        let titles = |l: &SessionList| -> Vec<String> {
            (0..l.len())
                .filter_map(|i| l.at(i).map(|s| s.title.clone()))
                .collect()
        };
        assert_eq!(titles(&list), ["task 3", "task 1"]);
        list.set_filter("coder -failed");
        assert_eq!(titles(&list), ["task 1"]);
        let typed = "-agent:coder";
        for end in 1..=typed.len() {
            list.set_filter(&typed[..end]);
            let mut fresh = SessionList::default();
            fresh.replace_all(vec![
                session(1, "coder", SessionStatus::Idle),
                session(2, "reviewer", SessionStatus::Dead),
                session(3, "coder", SessionStatus::Failed),
            ]);
            fresh.set_filter(&typed[..end]);
            assert_eq!(titles(&list), titles(&fresh), "{:?}", &typed[..end]);
        }
        assert_eq!(titles(&list), ["task 2"]);
        list.set_filter("-");
        assert_eq!(list.len(), 3, "a lone minus is a word");
    }

    /// Ended sessions are left out of the list unless the filter asks about status or finds
    /// them by a word; the title says how many are left out; `[tui] show_ended` lists them.
    #[test]
    fn ended_sessions_are_hidden_until_asked_for() {
        let mut list = SessionList::hiding_ended();
        let mut gone = session(3, "coder", SessionStatus::Dead);
        gone.title = "old work".into();
        list.replace_all(vec![
            session(1, "coder", SessionStatus::Idle),
            session(2, "reviewer", SessionStatus::Failed),
            gone,
            session(4, "reviewer", SessionStatus::Dead),
        ]);
        let shown = |list: &SessionList| -> Vec<u64> {
            (0..list.len())
                .filter_map(|i| list.at(i))
                .map(|s| s.id.as_u128() as u64)
                .collect()
        };
        assert_eq!(shown(&list), [2, 1]);
        assert_eq!(list.ended_hidden(), Some(Some(2)));
        assert!(list.filter().text.is_empty());
        // a filter: still hidden, counted among what the rest of it would show
        list.set_filter("reviewer");
        assert_eq!(shown(&list), [2]);
        assert_eq!(list.ended_hidden(), Some(None));
        // asked for: by status, by a word that finds them, by id
        for text in ["status:ended", "ended", "dead", "-status:failed", "id:0000"] {
            list.set_filter(text);
            assert!(shown(&list).contains(&4), "{text}: {:?}", shown(&list));
            assert_eq!(list.ended_hidden(), None, "{text}");
        }
        list.set_filter("status:ended");
        assert_eq!(shown(&list), [4, 3]);
        // a session that ends leaves the list; one started again comes back
        list.set_filter("");
        list.upsert(session(1, "coder", SessionStatus::Dead));
        assert_eq!(shown(&list), [2]);
        assert_eq!(list.ended_hidden(), Some(Some(3)));
        list.upsert(session(3, "coder", SessionStatus::Ready));
        assert_eq!(shown(&list), [3, 2]);
        // shown with the rest
        list.show_ended(true);
        assert_eq!(shown(&list), [4, 3, 2, 1]);
        assert_eq!(list.ended_hidden(), None);
        list.show_ended(false);
        assert_eq!(shown(&list), [3, 2]);
    }
}
