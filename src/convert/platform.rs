//! Lambda's own log lines: START / END / REPORT / INIT_START, timeouts and crashes in the text
//! format, and `platform.*` records in the JSON log format. Parsed into [`Platform`] records
//! that `assemble` turns into invocation and init spans.
//!
//! Formats (AWS Lambda developer guide, "Working with Lambda function logs"; JSON format:
//! "Log-level and format controls"):
//! ```text
//! START RequestId: <id> Version: $LATEST
//! END RequestId: <id>
//! REPORT RequestId: <id>\tDuration: 14.97 ms\tBilled Duration: 15 ms\tMemory Size: 128 MB\tMax Memory Used: 67 MB\t[Init Duration: 130.49 ms\t][XRAY TraceId: 1-…\tSegmentId: …\tSampled: true\t][Status: timeout\t][Error Type: Runtime.ExitError\t]
//! <ts> <id> Task timed out after 3.00 seconds
//! RequestId: <id> Error: Runtime exited with error: signal: killed
//! RequestId: <id> Process exited before completing request
//! {"time":"…","type":"platform.start","record":{"requestId":"…","version":"$LATEST","tracing":{"value":"Root=…"}}}
//! {"time":"…","type":"platform.report","record":{"requestId":"…","metrics":{…},"status":"timeout","errorType":"…"}}
//! ```

use crate::emit::propagation::parse_xray_header;
use crate::emit::SpanContext;
use std::borrow::Cow;

/// A Lambda platform event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Platform<'a> {
    /// `INIT_START` / `platform.initStart`: a new execution environment (cold start).
    InitStart {
        /// Runtime version, if given.
        runtime_version: Cow<'a, str>,
    },
    /// `START` / `platform.start`.
    Start {
        /// Request id.
        request_id: Cow<'a, str>,
        /// Function version.
        version: Cow<'a, str>,
        /// Trace context from `platform.start` tracing (X-Ray header), if any.
        tracing: Option<SpanContext>,
    },
    /// `END` / `platform.runtimeDone`.
    End {
        /// Request id.
        request_id: Cow<'a, str>,
    },
    /// `REPORT` / `platform.report`.
    Report(Report<'a>),
    /// `Task timed out after N seconds`.
    Timeout {
        /// Request id.
        request_id: Cow<'a, str>,
        /// The message.
        message: Cow<'a, str>,
    },
    /// The handler failed: Node's `Invoke Error` line, Python's `[ERROR] Type: message`
    /// (text format). Python's line names no request: `request_id` is empty and the stream's
    /// current invocation is meant.
    HandlerError {
        /// Request id, or empty.
        request_id: Cow<'a, str>,
        /// `errorType: errorMessage`.
        message: Cow<'a, str>,
    },
    /// The runtime died: out of memory (`signal: killed`) or a crash.
    Crash {
        /// Request id.
        request_id: Cow<'a, str>,
        /// The message.
        message: Cow<'a, str>,
        /// `signal: killed`, the usual sign of the out-of-memory killer.
        out_of_memory: bool,
    },
}

/// The figures of a REPORT line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report<'a> {
    /// Request id.
    pub request_id: Cow<'a, str>,
    /// `Duration`, ms.
    pub duration_ms: f64,
    /// `Billed Duration`, ms.
    pub billed_ms: Option<f64>,
    /// `Memory Size`, MB.
    pub memory_mb: Option<i64>,
    /// `Max Memory Used`, MB.
    pub max_memory_mb: Option<i64>,
    /// `Init Duration`, ms: present on cold starts only.
    pub init_ms: Option<f64>,
    /// The X-Ray trace (`XRAY TraceId` + `SegmentId` + `Sampled`), as a context.
    pub xray: Option<SpanContext>,
    /// `Status` (`success`, `timeout`, `error`, `failure`), when given.
    pub status: Option<Cow<'a, str>>,
    /// `Error Type`, when given.
    pub error_type: Option<Cow<'a, str>>,
}

fn request_id_after<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let rest = s.split_once(key)?.1.trim_start();
    let id = rest.split(|c: char| c.is_whitespace()).next()?;
    (!id.is_empty()).then_some(id)
}

/// Lambda request ids are UUIDs: 36 characters of hex digits and dashes.
fn looks_like_request_id(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn number(v: &str) -> Option<f64> {
    v.split_whitespace().next()?.parse().ok()
}

/// Parses a text-format platform line (the message as CloudWatch stores it).
pub fn parse_text(message: &str) -> Option<Platform<'_>> {
    let m = message.trim_end_matches(['\n', '\r']);
    if let Some(rest) = m.strip_prefix("START RequestId: ") {
        let request_id = rest.split_whitespace().next()?.into();
        let version = rest
            .split_once("Version: ")
            .map_or("", |(_, v)| v.trim())
            .into();
        return Some(Platform::Start {
            request_id,
            version,
            tracing: None,
        });
    }
    if let Some(rest) = m.strip_prefix("END RequestId: ") {
        return Some(Platform::End {
            request_id: rest.trim().into(),
        });
    }
    if m.starts_with("REPORT RequestId: ") {
        return parse_report(m).map(Platform::Report);
    }
    if let Some(rest) = m.strip_prefix("INIT_START") {
        let runtime_version = rest
            .split_once("Runtime Version: ")
            .map_or("", |(_, v)| v.split('\t').next().unwrap_or("").trim())
            .into();
        return Some(Platform::InitStart { runtime_version });
    }
    if let Some(at) = m.find("Task timed out after") {
        // `<ts> <requestId> Task timed out after 3.00 seconds` (tab- or space-separated).
        let prefix: Vec<&str> = m[..at].split_whitespace().collect();
        let request_id = prefix.last().filter(|r| looks_like_request_id(r))?;
        return Some(Platform::Timeout {
            request_id: (*request_id).into(),
            message: m[at..].trim().into(),
        });
    }
    if let Some((prefix, json)) = m.split_once("\tERROR\tInvoke Error ") {
        // Node: `<ts>\t<requestId>\tERROR\tInvoke Error \t{"errorType":…,"errorMessage":…}`.
        let request_id = prefix
            .split('\t')
            .nth(1)
            .filter(|r| looks_like_request_id(r))?;
        return Some(Platform::HandlerError {
            request_id: request_id.into(),
            message: error_text(json.trim()).into(),
        });
    }
    if let Some(rest) = m.strip_prefix("[ERROR] ") {
        // Python: `[ERROR] ValueError: boom` then the traceback, in one event.
        let first = rest.lines().next().unwrap_or("").trim();
        let error_type = first.split(": ").next().unwrap_or("");
        let is_type = !error_type.is_empty()
            && error_type
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.');
        if is_type && m.contains("Traceback (most recent call last)") {
            return Some(Platform::HandlerError {
                request_id: "".into(),
                message: first.into(),
            });
        }
    }
    if m.contains("Runtime exited with error")
        || m.contains("Process exited before completing request")
    {
        let request_id = request_id_after(m, "RequestId:").filter(|r| looks_like_request_id(r))?;
        let message = m
            .split_once(request_id)
            .map(|(_, r)| {
                r.trim_start_matches([' ', ':'])
                    .trim_start_matches("Error: ")
                    .trim()
            })
            .unwrap_or(m)
            .lines()
            .next()
            .unwrap_or("");
        let out_of_memory = m.contains("signal: killed");
        return Some(Platform::Crash {
            request_id: request_id.into(),
            message: message.into(),
            out_of_memory,
        });
    }
    None
}

/// `errorType: errorMessage` from the JSON Node prints after `Invoke Error`.
fn error_text(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    match (field("errorType"), field("errorMessage")) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        (Some(one), None) | (None, Some(one)) => one.to_owned(),
        (None, None) => "Invoke Error".to_owned(),
    }
}

fn parse_report(m: &str) -> Option<Report<'_>> {
    let mut r = Report::default();
    let (mut xray_root, mut xray_parent, mut xray_sampled) = (None, None, None);
    for field in m.split('\t') {
        let Some((k, v)) = field.split_once(": ") else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "REPORT RequestId" => r.request_id = v.into(),
            "Duration" => r.duration_ms = number(v)?,
            "Billed Duration" => r.billed_ms = number(v),
            "Memory Size" => r.memory_mb = number(v).map(|x| x as i64),
            "Max Memory Used" => r.max_memory_mb = number(v).map(|x| x as i64),
            "Init Duration" => r.init_ms = number(v),
            "XRAY TraceId" => xray_root = Some(v),
            "SegmentId" => xray_parent = Some(v),
            "Sampled" => xray_sampled = Some(v == "true"),
            "Status" => r.status = Some(v.into()),
            "Error Type" => r.error_type = Some(v.into()),
            _ => {}
        }
    }
    if let (Some(root), Some(parent)) = (xray_root, xray_parent) {
        let sampled = if xray_sampled == Some(false) {
            "0"
        } else {
            "1"
        };
        r.xray = parse_xray_header(&format!("Root={root};Parent={parent};Sampled={sampled}"));
    }
    (!r.request_id.is_empty()).then_some(r)
}

/// Parses a JSON log format platform record (`{"time","type":"platform.…","record":{…}}`).
pub fn parse_json(v: &serde_json::Value) -> Option<Platform<'static>> {
    let ty = v.get("type")?.as_str()?;
    let rec = v.get("record")?;
    let s = |k: &str| -> Cow<'static, str> {
        rec.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_owned()
            .into()
    };
    let request_id = s("requestId");
    match ty {
        "platform.initStart" => Some(Platform::InitStart {
            runtime_version: s("runtimeVersion"),
        }),
        "platform.start" => {
            let tracing = rec
                .pointer("/tracing/value")
                .and_then(|x| x.as_str())
                .and_then(parse_xray_header);
            Some(Platform::Start {
                request_id,
                version: s("version"),
                tracing,
            })
        }
        "platform.runtimeDone" => Some(Platform::End { request_id }),
        "platform.report" => {
            let m = rec.get("metrics");
            let f = |k: &str| m.and_then(|m| m.get(k)).and_then(|x| x.as_f64());
            let xray = rec
                .pointer("/tracing/value")
                .and_then(|x| x.as_str())
                .and_then(parse_xray_header);
            Some(Platform::Report(Report {
                request_id,
                duration_ms: f("durationMs")?,
                billed_ms: f("billedDurationMs"),
                memory_mb: f("memorySizeMB").map(|x| x as i64),
                max_memory_mb: f("maxMemoryUsedMB").map(|x| x as i64),
                init_ms: f("initDurationMs"),
                xray,
                status: rec
                    .get("status")
                    .and_then(|x| x.as_str())
                    .map(|x| x.to_owned().into()),
                error_type: rec
                    .get("errorType")
                    .and_then(|x| x.as_str())
                    .map(|x| x.to_owned().into()),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_errors_in_the_text_format() {
        let node = format!(
            "2024-05-01T12:00:00.123Z\t{REQ}\tERROR\tInvoke Error \t{{\"errorType\":\"Error\",\"errorMessage\":\"item \\\"x\\\" not found\",\"stack\":[\"Error: item\"]}}\n"
        );
        assert_eq!(
            parse_text(&node),
            Some(Platform::HandlerError {
                request_id: REQ.into(),
                message: "Error: item \"x\" not found".into(),
            })
        );
        let py = "[ERROR] ValueError: boom\nTraceback (most recent call last):\n  File \"/var/task/h.py\"\n";
        assert_eq!(
            parse_text(py),
            Some(Platform::HandlerError {
                request_id: "".into(),
                message: "ValueError: boom".into(),
            })
        );
        // An application's own error log is not a handler error.
        assert_eq!(
            parse_text("[ERROR] could not reach the cache, retrying"),
            None
        );
        assert_eq!(parse_text("[ERROR] cache: miss"), None);
        assert_eq!(
            parse_text(&format!(
                "[ERROR]\t2024-05-01T12:00:00.123Z\t{REQ}\tboom: x"
            )),
            None
        );
    }

    const REQ: &str = "c793869b-ee49-115b-a5b6-4fd21e8dedac";

    #[test]
    fn text_lines() {
        assert_eq!(
            parse_text(&format!("START RequestId: {REQ} Version: $LATEST\n")),
            Some(Platform::Start {
                request_id: REQ.into(),
                version: "$LATEST".into(),
                tracing: None
            })
        );
        assert_eq!(
            parse_text(&format!("END RequestId: {REQ}\n")),
            Some(Platform::End {
                request_id: REQ.into()
            })
        );
        let report = format!("REPORT RequestId: {REQ}\tDuration: 14.97 ms\tBilled Duration: 15 ms\tMemory Size: 128 MB\tMax Memory Used: 67 MB\tInit Duration: 130.49 ms\tXRAY TraceId: 1-5759e988-bd862e3fe1be46a994272793\tSegmentId: 557abcec3ee5a047\tSampled: true\t\n");
        let Some(Platform::Report(r)) = parse_text(&report) else {
            panic!()
        };
        assert_eq!(
            (
                r.duration_ms,
                r.billed_ms,
                r.memory_mb,
                r.max_memory_mb,
                r.init_ms
            ),
            (14.97, Some(15.0), Some(128), Some(67), Some(130.49))
        );
        let x = r.xray.unwrap();
        assert_eq!(x.trace_id.to_string(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(x.span_id.to_string(), "557abcec3ee5a047");
        let timeout = format!("2026-11-23T10:00:03.500Z {REQ} Task timed out after 3.00 seconds\n");
        assert_eq!(
            parse_text(&timeout),
            Some(Platform::Timeout {
                request_id: REQ.into(),
                message: "Task timed out after 3.00 seconds".into()
            })
        );
        let status = format!("REPORT RequestId: {REQ}\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 128 MB\tMax Memory Used: 70 MB\tStatus: timeout\n");
        let Some(Platform::Report(r)) = parse_text(&status) else {
            panic!()
        };
        assert_eq!(r.status.as_deref(), Some("timeout"));
        let oom = format!(
            "RequestId: {REQ} Error: Runtime exited with error: signal: killed\nRuntime.ExitError"
        );
        assert_eq!(
            parse_text(&oom),
            Some(Platform::Crash {
                request_id: REQ.into(),
                message: "Runtime exited with error: signal: killed".into(),
                out_of_memory: true
            })
        );
        let init = "INIT_START Runtime Version: nodejs:20.v13\tRuntime Version ARN: arn:aws:lambda:us-east-1::runtime:0cd\n";
        assert_eq!(
            parse_text(init),
            Some(Platform::InitStart {
                runtime_version: "nodejs:20.v13".into()
            })
        );
        assert_eq!(parse_text("hello START RequestId: x"), None);
        assert_eq!(parse_text("print(\"Task timed out after 3 s\")"), None);
    }

    #[test]
    fn json_records() {
        let start: serde_json::Value = serde_json::from_str(r#"{"time":"2024-02-09T08:42:44.078Z","type":"platform.start","record":{"requestId":"r1","version":"$LATEST","tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=1"}}}"#).unwrap();
        let Some(Platform::Start {
            tracing: Some(t), ..
        }) = parse_json(&start)
        else {
            panic!()
        };
        assert_eq!(t.span_id.to_string(), "557abcec3ee5a047");
        let report: serde_json::Value = serde_json::from_str(r#"{"time":"2024-02-09T08:42:45.078Z","type":"platform.report","record":{"requestId":"r1","metrics":{"durationMs":1233.96,"billedDurationMs":1698,"memorySizeMB":256,"maxMemoryUsedMB":123,"initDurationMs":463.512},"status":"timeout"}}"#).unwrap();
        let Some(Platform::Report(r)) = parse_json(&report) else {
            panic!()
        };
        assert_eq!(
            (r.duration_ms, r.init_ms, r.status.as_deref()),
            (1233.96, Some(463.512), Some("timeout"))
        );
    }
}
