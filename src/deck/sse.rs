//! Server-Sent Events read from an HTTP response: `(event, data)` pairs as they come. Comments
//! (`serve`'s keep-alives) and fields other than `event` and `data` are skipped.

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

/// One event: its name (`message` when the server gave none) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Reads the body of `response` as events; the stream ends with the body (or its first error).
pub fn events(response: reqwest::Response) -> BoxStream<'static, SseEvent> {
    parse(
        response
            .bytes_stream()
            .map(|chunk| chunk.map(|c| c.to_vec())),
    )
}

/// The events of a stream of byte chunks, split anywhere.
pub fn parse<E: Send + 'static>(
    chunks: impl Stream<Item = Result<Vec<u8>, E>> + Send + 'static,
) -> BoxStream<'static, SseEvent> {
    let state = (
        Box::pin(chunks),
        Vec::<u8>::new(),
        std::collections::VecDeque::new(),
    );
    Box::pin(futures::stream::unfold(
        state,
        |(mut chunks, mut buf, mut ready)| async move {
            loop {
                if let Some(event) = ready.pop_front() {
                    return Some((event, (chunks, buf, ready)));
                }
                let chunk = chunks.next().await?.ok()?;
                buf.extend_from_slice(&chunk);
                while let Some(end) = frame_end(&buf) {
                    let frame: Vec<u8> = buf.drain(..end).collect();
                    if let Some(event) = read_frame(&String::from_utf8_lossy(&frame)) {
                        ready.push_back(event);
                    }
                }
            }
        },
    ))
}

/// Where the first frame ends (after its blank line), if the buffer holds a whole one.
fn frame_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn read_frame(frame: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Option<String> = None;
    for line in frame.lines() {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    Some(SseEvent {
        event: event.unwrap_or_else(|| "message".into()),
        data: data?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_split_anywhere_read_whole() {
        let text = ": keep-alive\n\nevent: session\ndata: {\"a\":1}\n\nevent: delta\r\ndata: one\r\ndata: two\r\n\r\ndata: plain\n\n";
        // Every split of the text into two chunks reads the same events.
        for at in 0..text.len() {
            let (a, b) = text.as_bytes().split_at(at);
            let chunks =
                futures::stream::iter(vec![Ok::<_, std::io::Error>(a.to_vec()), Ok(b.to_vec())]);
            let got: Vec<SseEvent> = parse(chunks).collect().await;
            assert_eq!(
                got,
                vec![
                    SseEvent {
                        event: "session".into(),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        event: "delta".into(),
                        data: "one\ntwo".into()
                    },
                    SseEvent {
                        event: "message".into(),
                        data: "plain".into()
                    },
                ],
                "split at {at}"
            );
        }
    }
}
