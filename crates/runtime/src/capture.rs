//! Capturing an instance's output: its pipes are read line by line (long lines split,
//! the call tag the built-in invokers add stripped off and used) into the function's log.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt as _, BufReader};

use crate::instance::Instance;
use crate::logs::Logs;

/// Reads lines from one of the process's pipes until it closes.
pub(crate) async fn capture(
    logs: Arc<Logs>,
    instance: Arc<Instance>,
    stream: &'static str,
    pipe: impl AsyncRead + Unpin,
    max_line: usize,
) {
    // A call's tag does not count toward the line's length.
    let tag_max = gust_api::CallId::MAX_LEN + 2;
    let mut reader = BufReader::with_capacity(max_line + tag_max, pipe);
    let mut buf = Vec::with_capacity(256);
    // The rest of a line longer than `max_line`, and the call it belongs to: it becomes
    // the next line(s).
    let mut carry: Vec<u8> = Vec::new();
    let mut carry_call: Option<String> = None;
    loop {
        buf.clear();
        let continued = !carry.is_empty();
        buf.append(&mut carry);
        let room = (max_line + tag_max).saturating_sub(buf.len()) as u64;
        let mut limited = (&mut reader).take(room);
        match limited.read_until(b'\n', &mut buf).await {
            Ok(0) if buf.is_empty() => return,
            Ok(_) => {}
            Err(_) => return,
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        let (tagged, text) = if continued { (carry_call.take(), &buf[..]) } else { split_tag(&buf) };
        let call = tagged.or_else(|| instance.current_call());
        let (text, rest) = text.split_at(text.len().min(max_line));
        if !rest.is_empty() {
            carry = rest.to_vec();
            carry_call = call.clone();
        }
        instance.output(&logs, stream, String::from_utf8_lossy(text).into_owned(), call);
    }
}

/// Splits the `\x1f<call id>\x1f` tag the built-in invokers put before lines written
/// during a call. Lines without one are returned whole.
pub(crate) fn split_tag(line: &[u8]) -> (Option<String>, &[u8]) {
    if let Some(rest) = line.strip_prefix(b"\x1f")
        && let Some(end) = rest.iter().position(|b| *b == 0x1f)
        && end <= gust_api::CallId::MAX_LEN
    {
        let id = String::from_utf8_lossy(&rest[..end]).into_owned();
        return ((!id.is_empty()).then_some(id), &rest[end + 1..]);
    }
    (None, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_split_off() {
        assert_eq!(split_tag(b"\x1fabc\x1fhello"), (Some("abc".to_owned()), &b"hello"[..]));
        assert_eq!(split_tag(b"plain"), (None, &b"plain"[..]));
        assert_eq!(split_tag(b"\x1funterminated"), (None, &b"\x1funterminated"[..]));
        assert_eq!(split_tag(b"\x1f\x1fx"), (None, &b"x"[..]));
    }
}
