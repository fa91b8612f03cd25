//! An attached session's transcript: every stored message (paged in from the store, no cap),
//! live deltas applied as they come, follow mode, wrap, timestamps, folded tool calls, and the
//! composer.

use crate::core::ingest::LiveDelta;
use crate::model::{Message, Part};
use ratatui_textarea::TextArea;
use uuid::Uuid;

pub struct Transcript {
    pub session: Uuid,
    /// In seq order.
    pub messages: Vec<Message>,
    /// Whether the whole history has been read from the store yet.
    pub loaded: bool,
    /// Stick to the bottom as new text arrives; stops when the operator scrolls up.
    pub follow: bool,
    /// First line shown (when not following).
    pub scroll: usize,
    pub wrap: bool,
    pub timestamps: bool,
    pub tools_open: bool,
    pub composer: Option<TextArea<'static>>,
}

impl Transcript {
    pub fn new(session: Uuid) -> Self {
        Transcript {
            session,
            messages: Vec::new(),
            loaded: false,
            follow: true,
            scroll: 0,
            wrap: true,
            timestamps: false,
            tools_open: false,
            composer: None,
        }
    }

    /// Adds or replaces messages (by seq).
    pub fn merge(&mut self, messages: Vec<Message>) {
        for m in messages {
            match self.messages.binary_search_by_key(&m.seq, |x| x.seq) {
                Ok(i) => self.messages[i] = m,
                Err(i) => self.messages.insert(i, m),
            }
        }
    }

    /// The highest seq held.
    pub fn last_seq(&self) -> i64 {
        self.messages.last().map_or(0, |m| m.seq)
    }

    /// Applies streamed text to the message it belongs to (the stored copy catches up later).
    pub fn apply_delta(&mut self, delta: &LiveDelta) -> bool {
        let Ok(i) = self.messages.binary_search_by_key(&delta.seq, |m| m.seq) else {
            return false;
        };
        let parts = &mut self.messages[i].parts;
        while parts.len() <= delta.part {
            parts.push(Part::text(""));
        }
        match &mut parts[delta.part] {
            Part::Text { text } | Part::Reasoning { text } => {
                text.push_str(&delta.text);
                true
            }
            _ => false,
        }
    }

    pub fn open_composer(&mut self) {
        if self.composer.is_none() {
            let mut area = TextArea::default();
            area.set_placeholder_text("Message the agent (ctrl-s sends, esc leaves)");
            self.composer = Some(area);
        }
    }
}
