//! A Server-Sent Events parser that survives anything a network or a harness can send: lines
//! split across chunks, `\r\n` or `\r` endings, multi-line data, comments, unknown fields,
//! invalid UTF-8, and events too large to keep (dropped with a warning, never a crash or an
//! unbounded buffer).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

pub struct SseParser {
    line: Vec<u8>,
    data: String,
    event: Option<String>,
    id: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    max_event: usize,
    oversized: bool,
    dropped: u64,
}

impl SseParser {
    /// A parser that drops events whose data exceeds `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: String::new(),
            event: None,
            id: None,
            after_cr: false,
            max_event,
            oversized: false,
            dropped: 0,
        }
    }

    /// Events dropped for being too large so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Feeds bytes; returns the events they completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &byte in chunk {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.end_line(&mut out);
                    self.after_cr = true;
                }
                _ => {
                    // A single line longer than the limit (plus room for a field name) can
                    // only be part of an oversized event: stop buffering it.
                    if self.line.len() <= self.max_event + 16 {
                        self.line.push(byte);
                    } else {
                        self.oversized = true;
                    }
                }
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment (heartbeats often are)
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let value = &text[i + 1..];
                (&text[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.oversized || self.data.len() + value.len() + 1 > self.max_event {
                    self.oversized = true;
                    self.data.clear();
                } else {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
            }
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {} // retry and unknown fields
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let data = std::mem::take(&mut self.data);
        let event = self.event.take();
        if self.oversized {
            self.oversized = false;
            self.dropped += 1;
            tracing::warn!(
                limit = self.max_event,
                "dropped an event larger than the limit"
            );
            return;
        }
        if data.is_empty() && event.is_none() {
            return;
        }
        out.push(SseEvent {
            event,
            id: self.id.clone(),
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseEvent> {
        chunks.iter().flat_map(|c| parser.feed(c)).collect()
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let stream = b": hello\r\nid: 7\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata: second\n\n";
        let whole = all(&mut SseParser::new(1024), &[stream]);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].data, "{\"a\":\n1}");
        assert_eq!(whole[0].event.as_deref(), Some("message"));
        assert_eq!(whole[0].id.as_deref(), Some("7"));
        assert_eq!(whole[1].data, "second");
        assert_eq!(
            whole[1].id.as_deref(),
            Some("7"),
            "the last id carries over"
        );
        // byte by byte, including a \r\n split between chunks
        let mut p = SseParser::new(1024);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&mut p, &bytes), whole);
    }

    #[test]
    fn garbage_and_oversized_events_are_skipped() {
        let mut p = SseParser::new(16);
        let mut input = Vec::new();
        input.extend_from_slice(b"data: ");
        input.extend_from_slice(&[b'x'; 100]);
        input.extend_from_slice(b"\n\nnonsense without colon\n\xff\xfe: bad utf8\n\ndata: ok\n\n");
        let events = p.feed(&input);
        assert_eq!(
            events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            vec!["ok"]
        );
        assert_eq!(p.dropped(), 1);
        // a lone \r ends lines too
        let mut p = SseParser::new(64);
        assert_eq!(p.feed(b"data: a\r\rdata: b\r\r").len(), 2);
    }
}
