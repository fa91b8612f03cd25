//! Container logs: written as CRI writes them (`<RFC3339Nano> <stdout|stderr> F <line>`, one
//! file per run), and read back as the kubelet's `/containerLogs` serves them.

use super::{PodEntry, now_nanos};
use axum::body::Bytes;
use chrono::{DateTime, Utc};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// The log of a container's run (0 for the first).
pub(crate) fn path(pod_dir: &Path, container: &str, run: u32) -> PathBuf {
    pod_dir
        .join("logs")
        .join(container)
        .join(format!("{run}.log"))
}

/// Copies a process's stdout and stderr, line by line, into its log, until both close.
pub(crate) async fn write(
    path: PathBuf,
    stdout: Option<impl AsyncRead + Unpin + Send + 'static>,
    stderr: Option<impl AsyncRead + Unpin + Send + 'static>,
) {
    let (tx, mut rx) = mpsc::channel::<(&'static str, Vec<u8>)>(256);
    if let Some(out) = stdout {
        tokio::spawn(lines(out, "stdout", tx.clone()));
    }
    if let Some(err) = stderr {
        tokio::spawn(lines(err, "stderr", tx.clone()));
    }
    drop(tx);
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!("opening the log {}: {e}", path.display());
            None
        }
    };
    while let Some((stream, line)) = rx.recv().await {
        if let Some(f) = file.as_mut() {
            let mut record = format!("{} {stream} F ", now_nanos()).into_bytes();
            record.extend_from_slice(&line);
            record.push(b'\n');
            if let Err(e) = f.write_all(&record) {
                tracing::warn!("writing the log {}: {e}", path.display());
                file = None;
            }
        }
    }
}

async fn lines(
    reader: impl AsyncRead + Unpin,
    stream: &'static str,
    tx: mpsc::Sender<(&'static str, Vec<u8>)>,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                if tx.send((stream, buf.clone())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The options of `/containerLogs` (the API server passes `PodLogOptions` on as these).
#[derive(Default)]
pub(crate) struct LogQuery {
    pub tail_lines: Option<usize>,
    pub follow: bool,
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
    pub previous: bool,
    pub limit_bytes: Option<usize>,
    /// `Stdout`, `Stderr` or all.
    pub stream: Option<String>,
}

impl LogQuery {
    pub fn parse(query: &[(String, String)]) -> Result<LogQuery, String> {
        let mut q = LogQuery::default();
        let number = |k: &str, v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("{k}={v:?} is not a number"))
        };
        for (k, v) in query {
            match k.as_str() {
                "tailLines" => q.tail_lines = Some(number(k, v)?.max(0) as usize),
                "limitBytes" => q.limit_bytes = Some(number(k, v)?.max(1) as usize),
                "sinceSeconds" => {
                    q.since = Some(Utc::now() - chrono::Duration::seconds(number(k, v)?.max(0)))
                }
                "sinceTime" => {
                    q.since = Some(
                        DateTime::parse_from_rfc3339(v)
                            .map_err(|e| format!("sinceTime={v:?}: {e}"))?
                            .with_timezone(&Utc),
                    )
                }
                "follow" => q.follow = v == "true" || v == "1",
                "timestamps" => q.timestamps = v == "true" || v == "1",
                "previous" => q.previous = v == "true" || v == "1",
                "stream" => q.stream = Some(v.clone()).filter(|s| s != "All"),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// A line of a log file.
struct Line<'a> {
    time: &'a str,
    stream: &'a str,
    text: &'a [u8],
}

fn parse(line: &[u8]) -> Option<Line<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let _tag = parts.next()?;
    Some(Line {
        time,
        stream,
        text: parts.next().unwrap_or_default(),
    })
}

/// Formats the complete lines of `data` that pass the filters.
fn render(data: &[u8], query: &LogQuery, out: &mut Vec<Vec<u8>>) {
    for raw in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(line) = parse(raw) else { continue };
        if let Some(since) = query.since {
            let at = DateTime::parse_from_rfc3339(line.time).map(|t| t.with_timezone(&Utc));
            if at.is_ok_and(|at| at < since) {
                continue;
            }
        }
        if let Some(stream) = &query.stream
            && !stream.eq_ignore_ascii_case(line.stream)
        {
            continue;
        }
        let mut text = Vec::with_capacity(line.text.len() + 40);
        if query.timestamps {
            text.extend_from_slice(line.time.as_bytes());
            text.push(b' ');
        }
        text.extend_from_slice(line.text);
        text.push(b'\n');
        out.push(text);
    }
}

/// Why a log cannot be served: (HTTP status, message).
pub(crate) type LogError = (u16, String);

/// Which run's log a request reads, checked before answering.
pub(crate) fn choose(
    entry: &PodEntry,
    container: &str,
    query: &LogQuery,
) -> Result<(usize, u32), LogError> {
    let state = entry.lock();
    let (index, record) = state
        .containers
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == container)
        .ok_or_else(|| {
            (
                404,
                format!("container {container:?} not found in pod {:?}", entry.name),
            )
        })?;
    let run = if query.previous {
        record.runs.checked_sub(2).ok_or_else(|| {
            (
                400,
                format!(
                    "previous terminated container {container:?} in pod {:?} not found",
                    entry.name
                ),
            )
        })?
    } else {
        record.runs.checked_sub(1).ok_or_else(|| {
            let reason = match &record.state {
                super::RunState::Waiting { reason, .. } => reason.clone(),
                _ => "ContainerCreating".to_string(),
            };
            (
                400,
                format!(
                    "container {container:?} in pod {:?} is waiting to start: {reason}",
                    entry.name
                ),
            )
        })?
    };
    Ok((index, run))
}

/// Sends the log (and, following, what comes) into `tx` until done or the reader goes.
pub(crate) async fn stream(
    entry: Arc<PodEntry>,
    index: usize,
    mut run: u32,
    query: LogQuery,
    tx: mpsc::Sender<Bytes>,
) {
    let name = entry.lock().containers[index].name.clone();
    let mut budget = query.limit_bytes.unwrap_or(usize::MAX);
    let send_lines = async |lines: Vec<Vec<u8>>, budget: &mut usize| -> bool {
        for mut line in lines {
            if *budget == 0 {
                return false;
            }
            line.truncate(*budget);
            *budget -= line.len();
            if tx.send(Bytes::from(line)).await.is_err() {
                return false;
            }
        }
        *budget > 0
    };
    // What is there now.
    let file = path(&entry.dir, &name, run);
    let mut data = std::fs::read(&file).unwrap_or_default();
    // Only whole lines; the rest is read again when following.
    let whole = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    data.truncate(whole);
    let mut position = whole as u64;
    let mut lines = Vec::new();
    render(&data, &query, &mut lines);
    if let Some(tail) = query.tail_lines {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    if !send_lines(lines, &mut budget).await || !query.follow || query.previous {
        return;
    }
    // Following: new lines of this run, then of the next runs, until the container is done for
    // good or the pod goes.
    loop {
        let file = path(&entry.dir, &name, run);
        let fresh = read_from(&file, &mut position);
        if !fresh.is_empty() {
            let mut lines = Vec::new();
            render(&fresh, &query, &mut lines);
            if !send_lines(lines, &mut budget).await {
                return;
            }
            continue;
        }
        if entry.gone.is_cancelled() {
            return;
        }
        let (runs, log_open, done) = {
            let state = entry.lock();
            let c = &state.containers[index];
            (c.runs, c.log_open, c.done)
        };
        if runs > run + 1 {
            // A newer run: finish this file (done above), go on with the next.
            run += 1;
            position = 0;
            continue;
        }
        if !log_open && done {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tx.closed() => return,
        }
    }
}

/// Whole lines appended to `file` after `position` (which moves past them).
fn read_from(file: &Path, position: &mut u64) -> Vec<u8> {
    let Ok(mut f) = std::fs::File::open(file) else {
        return Vec::new();
    };
    if f.seek(SeekFrom::Start(*position)).is_err() {
        return Vec::new();
    }
    let mut data = Vec::new();
    if f.read_to_end(&mut data).is_err() {
        return Vec::new();
    }
    let whole = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    data.truncate(whole);
    *position += whole as u64;
    data
}
