//! The session list behind the home view: kept sorted (newest first) and indexed by id, so an
//! update is a binary search and a replace, never a re-sort; the filter is applied once per
//! change of filter or of a session's membership, and only visible rows are ever drawn. The
//! count of each status (the title bar's, every frame) is kept as sessions come and go.

use crate::model::{Session, SessionStatus};
use uuid::Uuid;

/// `/` filter: plain words match the title, agent, team, status or id; `key:value` pairs match
/// one field (`agent:`, `team:`, `status:`, `phase:`, `title:`, `id:`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub text: String,
    words: Vec<String>,
    pairs: Vec<(String, String)>,
}

impl Filter {
    pub fn parse(text: &str) -> Filter {
        let mut words = Vec::new();
        let mut pairs = Vec::new();
        for token in text.split_whitespace() {
            let lower = token.to_lowercase();
            match lower.split_once(':') {
                Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
                _ => words.push(lower),
            }
        }
        Filter {
            text: text.to_string(),
            words,
            pairs,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty() && self.pairs.is_empty()
    }

    pub fn matches(&self, s: &Session) -> bool {
        let field = |k: &str| -> Option<String> {
            Some(match k {
                "agent" => s.agent_id.to_lowercase(),
                "team" => s.team.to_lowercase(),
                "status" => s.status.as_str().to_string(),
                "phase" => s.phase.as_str().to_string(),
                "title" => s.title.to_lowercase(),
                "id" => s.id.to_string(),
                _ => return None,
            })
        };
        self.pairs
            .iter()
            .all(|(k, v)| field(k).is_some_and(|f| f.contains(v.as_str())))
            && self.words.iter().all(|w| {
                ["title", "agent", "team", "status", "id"]
                    .iter()
                    .any(|k| field(k).is_some_and(|f| f.contains(w.as_str())))
            })
    }
}

#[derive(Default)]
pub struct SessionList {
    /// Newest first (ids are time-ordered).
    all: Vec<Session>,
    filter: Filter,
    /// Indices into `all` that pass the filter; `None` when there is no filter.
    visible: Option<Vec<usize>>,
    selected: Option<Uuid>,
    /// How many of `all` have each status (indexed by the status's declaration order).
    by_status: [usize; SessionStatus::ALL.len()],
}

impl SessionList {
    fn position(&self, id: Uuid) -> Result<usize, usize> {
        self.all.binary_search_by(|s| id.cmp(&s.id))
    }

    pub fn replace_all(&mut self, mut sessions: Vec<Session>) {
        sessions.sort_by_key(|s| std::cmp::Reverse(s.id));
        self.by_status = Default::default();
        for s in &sessions {
            self.by_status[s.status as usize] += 1;
        }
        self.all = sessions;
        self.refilter();
    }

    /// Adds or updates one session; the selection stays on the same session.
    pub fn upsert(&mut self, session: Session) {
        match self.position(session.id) {
            Ok(i) => {
                let old = &mut self.by_status[self.all[i].status as usize];
                *old = old.saturating_sub(1);
                self.by_status[session.status as usize] += 1;
                let was = self.filter.matches(&self.all[i]);
                let now = self.filter.matches(&session);
                self.all[i] = session;
                if was != now {
                    self.refilter();
                }
            }
            Err(i) => {
                self.by_status[session.status as usize] += 1;
                self.all.insert(i, session);
                self.refilter();
            }
        }
    }

    pub fn get(&self, id: Uuid) -> Option<&Session> {
        self.position(id).ok().map(|i| &self.all[i])
    }

    pub fn set_filter(&mut self, text: &str) {
        self.filter = Filter::parse(text);
        self.refilter();
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    fn refilter(&mut self) {
        self.visible = if self.filter.is_empty() {
            None
        } else {
            Some(
                self.all
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| self.filter.matches(s))
                    .map(|(i, _)| i)
                    .collect(),
            )
        };
    }

    pub fn len(&self) -> usize {
        self.visible.as_ref().map_or(self.all.len(), Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn total(&self) -> usize {
        self.all.len()
    }

    pub fn at(&self, i: usize) -> Option<&Session> {
        match &self.visible {
            None => self.all.get(i),
            Some(v) => v.get(i).and_then(|&j| self.all.get(j)),
        }
    }

    /// The selected row's index among the visible ones (the first when the selection is gone).
    pub fn selected_index(&self) -> usize {
        let Some(id) = self.selected else { return 0 };
        match &self.visible {
            None => self.position(id).unwrap_or(0),
            Some(v) => match self.position(id) {
                Ok(j) => v
                    .binary_search(&j)
                    .unwrap_or_else(|k| k.min(v.len().saturating_sub(1))),
                Err(_) => 0,
            },
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
    pub fn count(&self, status: SessionStatus) -> usize {
        self.by_status[status as usize]
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
            created_at: t,
            updated_at: t,
            last_activity_at: t,
            idle_deadline: None,
            stopped_at: None,
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
        list.set_filter("nosuch:key");
        assert_eq!(list.len(), 0);
        list.set_filter("");
        assert_eq!(list.len(), 3);
        // a session leaving the filter on update
        list.set_filter("status:failed");
        list.upsert(session(3, "coder", SessionStatus::Ready));
        assert_eq!(list.len(), 1);
    }
}
