//! Captured output of instances, per function: appended as JSON lines to
//! `<data>/logs/<function>.log` (rotated at 8 MiB, one old file kept), fanned out live to
//! followers, plus a short ring of recent failed calls for `gust describe`.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use gust_api::wire::{CallError, LogLine};
use tokio::sync::broadcast;

/// A log file is rotated past this size.
const ROTATE_BYTES: u64 = 8 << 20;
/// Failed calls remembered per function.
const RECENT_ERRORS: usize = 20;
/// Lines buffered per follower before a slow one starts missing lines.
const FOLLOW_BUFFER: usize = 1024;
/// A single captured line is cut at this length, so one huge line cannot stall capture.
pub const MAX_LINE: usize = 16 * 1024;
/// Calls per function whose output volume is tracked (the most recent ones).
const TRACKED_CALLS: usize = 256;

/// Every function's captured output.
#[derive(Debug)]
pub struct Logs {
    dir: PathBuf,
    /// The most output bytes one call may log (0: no cap); beyond it lines are dropped.
    call_max: u64,
    /// Per function; the lock is held only for a write or a clone, never across `.await`.
    functions: Mutex<HashMap<String, FunctionLog>>,
}

#[derive(Debug)]
struct FunctionLog {
    file: Option<File>,
    size: u64,
    live: broadcast::Sender<LogLine>,
    errors: VecDeque<CallError>,
    /// Output bytes of recent calls, and whether their cap was reached.
    volume: VecDeque<(String, u64, bool)>,
}

impl FunctionLog {
    fn new() -> Self {
        Self {
            file: None,
            size: 0,
            live: broadcast::channel(FOLLOW_BUFFER).0,
            errors: VecDeque::new(),
            volume: VecDeque::new(),
        }
    }
}

/// The current time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Logs {
    /// Logs kept under `dir` (created if missing).
    ///
    /// # Errors
    /// When `dir` cannot be created.
    pub fn open(dir: &Path, call_max: u64) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_path_buf(), call_max, functions: Mutex::new(HashMap::new()) })
    }

    fn path(&self, function: &str) -> PathBuf {
        self.dir.join(format!("{function}.log"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FunctionLog>> {
        // Only plain data behind this lock; a panic elsewhere cannot corrupt it.
        self.functions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one line. Write failures are reported once through tracing and otherwise
    /// ignored: losing a log line must not fail a call.
    pub fn append(&self, line: LogLine) {
        let mut map = self.lock();
        let entry = map.entry(line.function.clone()).or_insert_with(FunctionLog::new);
        let mut line = line;
        if let Some(call) = line.call_id.as_deref()
            && self.call_max > 0
        {
            let i = match entry.volume.iter().position(|(c, _, _)| c == call) {
                Some(i) => i,
                None => {
                    if entry.volume.len() == TRACKED_CALLS {
                        entry.volume.pop_front();
                    }
                    entry.volume.push_back((call.to_owned(), 0, false));
                    entry.volume.len() - 1
                }
            };
            let (_, bytes, capped) = &mut entry.volume[i];
            if *capped {
                return;
            }
            *bytes += line.line.len() as u64;
            if *bytes > self.call_max {
                // The first line past the cap is replaced by one that says so; the rest go.
                *capped = true;
                line.stream = "gust".to_owned();
                line.line = format!(
                    "this call wrote more than {} bytes of output; the rest of it is dropped (--log-call-max)",
                    self.call_max
                );
            }
        }
        if entry.file.is_none() || entry.size > ROTATE_BYTES {
            let path = self.path(&line.function);
            if entry.size > ROTATE_BYTES {
                let _ = fs::rename(&path, path.with_extension("log.1"));
            }
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    entry.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    entry.file = Some(f);
                }
                Err(error) => tracing::warn!(path = %path.display(), %error, "cannot open log file"),
            }
        }
        if let (Some(f), Ok(mut text)) = (entry.file.as_mut(), serde_json::to_string(&line)) {
            text.push('\n');
            if f.write_all(text.as_bytes()).is_ok() {
                entry.size += text.len() as u64;
            }
        }
        let _ = entry.live.send(line);
    }

    /// Remembers a failed call for `gust describe`.
    pub fn record_error(&self, function: &str, error: CallError) {
        let mut map = self.lock();
        let entry = map.entry(function.to_owned()).or_insert_with(FunctionLog::new);
        entry.errors.push_front(error);
        entry.errors.truncate(RECENT_ERRORS);
    }

    /// Recent failed calls, newest first.
    pub fn recent_errors(&self, function: &str) -> Vec<CallError> {
        self.lock().get(function).map(|f| f.errors.iter().cloned().collect()).unwrap_or_default()
    }

    /// Live lines of `function` from now on.
    pub fn follow(&self, function: &str) -> broadcast::Receiver<LogLine> {
        let mut map = self.lock();
        map.entry(function.to_owned()).or_insert_with(FunctionLog::new).live.subscribe()
    }

    /// The last `tail` stored lines of `function`, oldest first. Blocking file I/O.
    pub fn tail(&self, function: &str, tail: usize) -> Vec<LogLine> {
        let path = self.path(function);
        let mut lines: VecDeque<LogLine> = VecDeque::with_capacity(tail.min(4096));
        for p in [path.with_extension("log.1"), path] {
            let Ok(f) = File::open(&p) else { continue };
            for l in BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(line) = serde_json::from_str::<LogLine>(&l) {
                    if lines.len() == tail {
                        lines.pop_front();
                    }
                    if tail > 0 {
                        lines.push_back(line);
                    }
                }
            }
        }
        lines.into()
    }

    /// Forgets a removed function: its files and its error ring.
    pub fn remove(&self, function: &str) {
        self.lock().remove(function);
        let path = self.path(function);
        let _ = fs::remove_file(path.with_extension("log.1"));
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(f: &str, text: &str) -> LogLine {
        LogLine {
            ts: now_rfc3339(),
            function: f.into(),
            instance: "i".into(),
            stream: "stdout".into(),
            call_id: None,
            line: text.into(),
        }
    }

    #[test]
    fn append_tail_follow_remove() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::open(dir.path(), 0).unwrap();
        let mut rx = logs.follow("a");
        for i in 0..5 {
            logs.append(line("a", &i.to_string()));
        }
        logs.append(line("b", "other"));
        let tail: Vec<_> = logs.tail("a", 3).into_iter().map(|l| l.line).collect();
        assert_eq!(tail, ["2", "3", "4"]);
        assert_eq!(rx.try_recv().unwrap().line, "0");
        logs.remove("a");
        assert!(logs.tail("a", 10).is_empty());
        assert_eq!(logs.tail("b", 10).len(), 1);
    }
}
