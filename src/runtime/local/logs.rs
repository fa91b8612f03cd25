//! Reading `sandbox.log` line by line: the last N lines, and with `follow`, lines as they are
//! appended (the file is looked at every 200 ms), until the stream is dropped or the sandbox's
//! folder is removed.

use crate::runtime::{LogOptions, LogStream, RuntimeError};
use futures::StreamExt;
use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const FOLLOW_POLL: Duration = Duration::from_millis(200);
const CHUNK: usize = 64 * 1024;

fn io_error(path: &std::path::Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Transient(format!("cannot read {}: {e}", path.display()))
}

/// Where the last `n` lines of a file of `len` bytes start (a final line without its newline
/// counts as a line).
async fn tail_offset(file: &mut File, len: u64, n: usize) -> std::io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    let mut newlines = 0;
    let mut end = len;
    let mut buf = vec![0u8; CHUNK];
    // A newline that ends the file ends the last line, it does not start another.
    let mut skip_last = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let size = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut buf[..size]).await?;
        for i in (0..size).rev() {
            if buf[i] != b'\n' {
                skip_last = false;
                continue;
            }
            if skip_last {
                skip_last = false;
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok(start + i as u64 + 1);
            }
        }
        end = start;
    }
    Ok(0)
}

struct Reader {
    path: PathBuf,
    file: Option<File>,
    /// Where the next read starts.
    offset: u64,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
    lines: VecDeque<String>,
    follow: bool,
    done: bool,
}

impl Reader {
    fn take_lines(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.partial.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.lines
                .push_back(String::from_utf8_lossy(&line).into_owned());
        }
    }

    /// Reads what is there now; false at the end of the file.
    async fn read_more(&mut self) -> Result<bool, RuntimeError> {
        if self.file.is_none() {
            match File::open(&self.path).await {
                Ok(file) => self.file = Some(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_error(&self.path, e)),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| io_error(&self.path, e))?
            .len();
        if len < self.offset {
            // Truncated: start over from its beginning.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset {
            return Ok(false);
        }
        let mut buf = vec![0u8; CHUNK.min((len - self.offset) as usize)];
        file.seek(SeekFrom::Start(self.offset))
            .await
            .map_err(|e| io_error(&self.path, e))?;
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| io_error(&self.path, e))?;
        self.offset += n as u64;
        self.take_lines(&buf[..n]);
        Ok(n > 0)
    }

    async fn next_line(&mut self) -> Option<Result<String, RuntimeError>> {
        loop {
            if let Some(line) = self.lines.pop_front() {
                return Some(Ok(line));
            }
            if self.done {
                return None;
            }
            match self.read_more().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            // At the end of what is written.
            if !self.follow || !self.path.exists() {
                self.done = true;
                if !self.partial.is_empty() {
                    let line = String::from_utf8_lossy(&self.partial).into_owned();
                    self.partial.clear();
                    return Some(Ok(line));
                }
                return None;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// The log at `path` as a stream of lines.
///
/// `since` is approximated at the level of the file: the local runtime does not timestamp
/// lines, so when the file was last written before `since` ago none of its lines are sent (and
/// with `follow`, only lines written from now on); otherwise every line is (within `tail`).
pub async fn stream(path: PathBuf, options: LogOptions) -> Result<LogStream, RuntimeError> {
    let mut reader = Reader {
        path: path.clone(),
        file: None,
        offset: 0,
        partial: Vec::new(),
        lines: VecDeque::new(),
        follow: options.follow,
        done: false,
    };
    match File::open(&path).await {
        Ok(mut file) => {
            let meta = file.metadata().await.map_err(|e| io_error(&path, e))?;
            let len = meta.len();
            let too_old = match (options.since, meta.modified()) {
                (Some(since), Ok(modified)) => SystemTime::now()
                    .checked_sub(since)
                    .is_some_and(|cutoff| modified < cutoff),
                _ => false,
            };
            reader.offset = if too_old {
                len
            } else if let Some(n) = options.tail {
                tail_offset(&mut file, len, n)
                    .await
                    .map_err(|e| io_error(&path, e))?
            } else {
                0
            };
            reader.file = Some(file);
        }
        // Nothing written yet: with `follow`, wait for it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&path, e)),
    }
    Ok(futures::stream::unfold(reader, |mut reader| async move {
        let line = reader.next_line().await?;
        Some((line, reader))
    })
    .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn lines(path: &std::path::Path, tail: Option<usize>) -> Vec<String> {
        let options = LogOptions {
            tail,
            ..Default::default()
        };
        stream(path.to_path_buf(), options)
            .await
            .expect("stream")
            .try_collect()
            .await
            .expect("lines")
    }

    #[tokio::test]
    async fn tail_counts_lines_from_the_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\r\nc\nd\n").expect("write");
        assert_eq!(lines(&path, Some(2)).await, ["c", "d"]);
        assert_eq!(lines(&path, Some(10)).await, ["a", "b", "c", "d"]);
        assert_eq!(lines(&path, Some(0)).await, Vec::<String>::new());
        assert_eq!(lines(&path, None).await, ["a", "b", "c", "d"]);
        std::fs::write(&path, "a\nb\npartial").expect("write");
        assert_eq!(lines(&path, Some(2)).await, ["b", "partial"]);
        let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, big).expect("write");
        assert_eq!(lines(&path, Some(2)).await, ["line 19998", "line 19999"]);
        assert_eq!(
            lines(&dir.path().join("missing"), Some(2)).await,
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn follow_sends_lines_as_they_are_written() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        std::fs::write(&path, "old\n").expect("write");
        let options = LogOptions {
            tail: Some(1),
            follow: true,
            ..Default::default()
        };
        let mut stream = stream(path.clone(), options).await.expect("stream");
        assert_eq!(
            stream.next().await.and_then(Result::ok).as_deref(),
            Some("old")
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        write!(file, "new 1\nnew").expect("write");
        assert_eq!(
            stream.next().await.and_then(Result::ok).as_deref(),
            Some("new 1")
        );
        writeln!(file, " 2").expect("write");
        assert_eq!(
            stream.next().await.and_then(Result::ok).as_deref(),
            Some("new 2")
        );
        std::fs::remove_file(&path).expect("remove");
        assert!(
            stream.next().await.is_none(),
            "the stream ends with its file"
        );
    }
}
