//! JSON bodies about calls: the answer to an async call, a call's record, and the
//! dead-letter queue's requests.

use serde::{Deserialize, Serialize};

use super::LogLine;

/// The `202` answer to `POST /async-function/{name}`: the call is stored and queued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AsyncAccepted {
    /// The call's id, also in `X-Call-Id`.
    pub call_id: String,
    /// Where its record is, also in `Location`: `/calls/{id}`.
    pub location: String,
    /// `queued`; `duplicate` when this call id was accepted before (the caller retried).
    pub status: String,
}

/// `GET /calls/{id}` and each row of `GET /api/v1/functions/{name}/calls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    /// The call's id.
    pub id: String,
    /// The function called.
    pub function: String,
    /// `queued`, `running`, `succeeded`, `failed` or `dead`.
    pub status: String,
    /// Attempts begun; more than the policy allows only after a crash of gust mid-call
    /// (at-least-once delivery).
    pub attempts: u32,
    /// When it was accepted, RFC 3339.
    pub accepted_at: String,
    /// When its latest attempt began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it became final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Seconds from acceptance to its end (including waits between attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The revision of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Whether the latest attempt waited for an instance to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<bool>,
    /// Where the result is POSTed once final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The function's answer to the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CallAnswer>,
    /// Why the latest attempt got no answer (a timeout, a crash, no instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The log lines the function wrote during the call (on `GET /calls/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
}

/// A function's answer as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallAnswer {
    /// HTTP status.
    pub status: u16,
    /// Headers, in order, as `[name, value]` pairs.
    pub headers: Vec<(String, String)>,
    /// The body, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// `POST /api/v1/functions/{name}/dlq/redrive` and `…/purge`: one call, or every dead one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DlqRequest {
    /// The call; all dead calls of the function when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// What a redrive or purge did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqAnswer {
    /// The function.
    pub function: String,
    /// Dead calls queued again (redrive) or deleted (purge).
    pub calls: usize,
}

/// Standard base64 with padding (RFC 4648 §4), for bodies that are not text.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in cases {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
