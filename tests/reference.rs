//! A deliberately naive decoder written from FORMAT.md alone: it splits, allocates and
//! re-parses freely. Property tests check the fast decoder against it (memchr's way).

use crate::model::{Attr, Dropped, Event, Link, Span, Str};

const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_to_hex(s: &str, bytes: usize) -> Result<String, String> {
    let mut bits: Vec<u8> = Vec::new();
    for c in s.chars() {
        let v = ALPHABET.find(c).ok_or("bad_ids")?;
        for i in (0..6).rev() {
            bits.push(((v >> i) & 1) as u8);
        }
    }
    if s.len() != (bytes * 8).div_ceil(6) || bits[bytes * 8..].iter().any(|&b| b != 0) {
        return Err("bad_ids".into());
    }
    let mut hex = String::new();
    for chunk in bits[..bytes * 8].chunks(8) {
        let byte = chunk.iter().fold(0u8, |acc, b| acc * 2 + b);
        hex.push_str(&format!("{byte:02x}"));
    }
    if hex.chars().all(|c| c == '0') {
        return Err("zero_id".into());
    }
    Ok(hex)
}

fn unescape(s: &str) -> Result<Str, String> {
    let (body, truncated) = match s.strip_suffix("%*") {
        Some(b) => (b, true),
        None => (s, false),
    };
    let mut out = Vec::new();
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '%' {
            let h: String = chars
                .get(i + 1..i + 3)
                .ok_or("bad_escape")?
                .iter()
                .collect();
            if h.len() != 2 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err("bad_escape".into());
            }
            out.push(u8::from_str_radix(&h, 16).unwrap());
            i += 3;
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(chars[i].encode_utf8(&mut buf).as_bytes());
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| "bad_utf8")?;
    Ok(if truncated {
        Str::Cut {
            text,
            truncated: true,
        }
    } else {
        Str::Plain(text)
    })
}

fn int(s: &str, code: &str) -> Result<i64, String> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(code.into());
    }
    s.parse().map_err(|_| code.to_string())
}

fn attr(tok: &str) -> Result<Attr, String> {
    let pos = tok.find(['=', '#', '~', '!']).ok_or("bad_field")?;
    if pos == 0 {
        return Err("empty_key".into());
    }
    let key = unescape(&tok[..pos])?;
    let raw = &tok[pos + 1..];
    let (ty, value) = match &tok[pos..pos + 1] {
        "=" => ("string", serde_json::to_value(unescape(raw)?).unwrap()),
        "#" => (
            "int",
            serde_json::Value::String(int(raw, "bad_number")?.to_string()),
        ),
        "~" => match raw {
            "nan" | "inf" | "-inf" => ("float", raw.into()),
            _ => {
                // A decimal literal: digits, sign, point, exponent (no "infinity", no "NaN").
                if !raw
                    .chars()
                    .all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
                    || !raw.chars().any(|c| c.is_ascii_digit())
                {
                    return Err("bad_number".into());
                }
                let f: f64 = raw.parse().map_err(|_| "bad_number")?;
                match f {
                    f if f == f64::INFINITY => ("float", "inf".into()),
                    f if f == f64::NEG_INFINITY => ("float", "-inf".into()),
                    f => ("float", serde_json::json!(f)),
                }
            }
        },
        _ => match raw {
            "t" => ("bool", true.into()),
            "f" => ("bool", false.into()),
            _ => return Err("bad_bool".into()),
        },
    };
    Ok(Attr {
        key,
        ty: ty.into(),
        value,
    })
}

#[derive(Default, Clone)]
struct Extras {
    service: Option<Str>,
    request_id: Option<Str>,
    message: Option<Str>,
    dropped: Dropped,
    resource: Vec<Attr>,
}

/// Parses field tokens into the span's attributes, events, links and extras.
fn fields(span: &mut Span, toks: &[&str], extras: &mut Extras) -> Result<(), String> {
    enum Target {
        Span,
        Event,
        Link,
    }
    let mut target = Target::Span;
    for tok in toks {
        let first = tok.chars().next().ok_or("bad_field")?;
        match first {
            '@' => {
                let (off, name) = tok[1..].split_once('=').ok_or("bad_field")?;
                span.events.push(Event {
                    offset_us: int(off, "bad_time")?,
                    name: unescape(name)?,
                    attributes: vec![],
                });
                target = Target::Event;
            }
            '^' => {
                let ids = &tok[1..];
                if ids.len() != 33 {
                    return Err("bad_ids".into());
                }
                span.links.push(Link {
                    trace_id: b64_to_hex(&ids[..22], 16)?,
                    span_id: b64_to_hex(&ids[22..], 8)?,
                    attributes: vec![],
                });
                target = Target::Link;
            }
            '*' => {
                let rest = &tok[1..];
                let mut cs = rest.char_indices();
                let letter_sep = (cs.next(), cs.next());
                if let (Some((_, l)), Some((_, sp))) = letter_sep {
                    let (letter, sep) = (l.to_string(), sp.to_string());
                    let (letter, sep) = (letter.as_str(), sep.as_str());
                    let val = &rest[l.len_utf8() + sp.len_utf8()..];
                    match (letter, sep) {
                        ("s", "=") => extras.service = Some(unescape(val)?),
                        ("r", "=") => extras.request_id = Some(unescape(val)?),
                        ("m", "=") => extras.message = Some(unescape(val)?),
                        ("a" | "e" | "l", "#") => {
                            let n = int(val, "bad_number")?;
                            if n < 0 {
                                return Err("bad_number".into());
                            }
                            let n = n as u32;
                            match letter {
                                "a" => extras.dropped.attributes = n,
                                "e" => extras.dropped.events = n,
                                _ => extras.dropped.links = n,
                            }
                        }
                        ("s" | "r" | "m" | "a" | "e" | "l", _) => return Err("bad_field".into()),
                        _ => {}
                    }
                } else if rest.len() == 1 && "srmael".contains(rest) && !rest.is_empty() {
                    return Err("bad_field".into());
                }
            }
            '+' => extras.resource.push(attr(&tok[1..])?),
            c if c.is_ascii_punctuation() && !"_.%=#~!".contains(c) => {}
            _ => {
                let a = attr(tok)?;
                match target {
                    Target::Span => span.attributes.push(a),
                    Target::Event => span.events.last_mut().unwrap().attributes.push(a),
                    Target::Link => span.links.last_mut().unwrap().attributes.push(a),
                }
            }
        }
    }
    Ok(())
}

fn dur_flags(tok: &str) -> Result<(u64, String, String), String> {
    let digits: String = tok.chars().take_while(|c| c.is_ascii_digit()).collect();
    let dur = int(&digits, "bad_time")? as u64;
    let (mut kind, mut status) = ("internal", "unset");
    for c in tok[digits.len()..].chars() {
        match c {
            's' => kind = "server",
            'c' => kind = "client",
            'p' => kind = "producer",
            'o' => kind = "consumer",
            'e' => status = "error",
            'k' => status = "ok",
            'a'..='z' => {}
            _ => return Err("bad_flags".into()),
        }
    }
    Ok((dur, kind.into(), status.into()))
}

fn empty_span(trace: String, span: String, parent: Option<String>) -> Span {
    Span {
        trace_id: trace,
        span_id: span,
        parent_span_id: parent,
        start_us: 0,
        duration_us: 0,
        name: Str::Plain(String::new()),
        kind: "internal".into(),
        status: "unset".into(),
        status_message: None,
        service: None,
        request_id: None,
        attributes: vec![],
        events: vec![],
        links: vec![],
        resource: vec![],
        dropped: Dropped::default(),
    }
}

pub fn decode(line: &str) -> Result<Vec<Span>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let rest = line.strip_prefix("SPLN").ok_or("no_marker")?;
    let (version, rest) = rest.split_once(' ').ok_or("no_marker")?;
    if version != "1" {
        return Err("unsupported_version".into());
    }
    let body = rest.strip_suffix(';').ok_or("truncated")?;
    if line.chars().any(|c| (c as u32) < 0x20 || c as u32 == 0x7f) {
        return Err("control_char".into());
    }
    let toks: Vec<&str> = body.split(' ').collect();
    if let Some(trace_b64) = toks[0].strip_prefix('+') {
        return decode_batch(trace_b64, &toks[1..]);
    }
    let ids = toks[0];
    if ids.len() != 33 && ids.len() != 44 {
        return Err("bad_ids".into());
    }
    let trace = b64_to_hex(&ids[..22], 16)?;
    let span_id = b64_to_hex(&ids[22..33], 8)?;
    let parent = if ids.len() == 44 {
        Some(b64_to_hex(&ids[33..], 8)?)
    } else {
        None
    };
    let mut span = empty_span(trace, span_id, parent);
    span.start_us = int(toks.get(1).ok_or("bad_time")?, "bad_time")? as u64;
    if toks[1].starts_with('-') {
        return Err("bad_time".into());
    }
    let (dur, kind, status) = dur_flags(toks.get(2).ok_or("bad_time")?)?;
    span.duration_us = dur;
    span.kind = kind;
    span.status = status;
    span.name = unescape(toks.get(3).ok_or("bad_field")?)?;
    let mut extras = Extras::default();
    fields(&mut span, &toks[4..], &mut extras)?;
    apply(&mut span, &extras);
    Ok(vec![span])
}

fn apply(span: &mut Span, e: &Extras) {
    span.service = e.service.clone().or(span.service.take());
    span.request_id = e.request_id.clone().or(span.request_id.take());
    span.status_message = e.message.clone();
    span.dropped = e.dropped.clone();
    span.resource.extend(e.resource.iter().cloned());
}

fn decode_batch(trace_b64: &str, toks: &[&str]) -> Result<Vec<Span>, String> {
    let trace = b64_to_hex(trace_b64, 16)?;
    let base_tok = toks.first().ok_or("bad_time")?;
    if base_tok.starts_with('-') {
        return Err("bad_time".into());
    }
    let base = int(base_tok, "bad_time")?;
    // Batch fields up to the first entry.
    let first_entry = toks
        .iter()
        .position(|t| t.starts_with('|'))
        .ok_or("bad_batch")?;
    let mut shared = Extras::default();
    let mut dummy = empty_span(String::new(), String::new(), None);
    fields(&mut dummy, &toks[1..first_entry], &mut shared)?;
    if !dummy.attributes.is_empty() || !dummy.events.is_empty() || !dummy.links.is_empty() {
        return Err("bad_batch".into());
    }
    // Split entries: an entry's field tokens end at the next token that starts with '|'
    // (positions 0-4 of an entry are fixed).
    let mut spans: Vec<Span> = Vec::new();
    let mut prev_fields: Option<Vec<&str>> = None;
    let mut i = first_entry;
    while i < toks.len() {
        let head = &toks[i..];
        if head.len() < 5 {
            return Err(if head.len() < 4 {
                "bad_time"
            } else {
                "bad_field"
            }
            .into());
        }
        let span_id = b64_to_hex(&head[0][1..], 8)?;
        let prev = spans.last();
        let parent = match head[1] {
            "\"" => prev.ok_or("bad_batch")?.parent_span_id.clone(),
            "-" => None,
            p => Some(b64_to_hex(p, 8)?),
        };
        let mut span = empty_span(trace.clone(), span_id, parent);
        let start = base
            .checked_add(int(head[2], "bad_time")?)
            .ok_or("bad_time")?;
        if start < 0 {
            return Err("bad_time".into());
        }
        span.start_us = start as u64;
        let (dur, kind, status) = dur_flags(head[3])?;
        span.duration_us = dur;
        span.kind = kind;
        span.status = status;
        span.name = if head[4] == "\"" {
            prev.ok_or("bad_batch")?.name.clone()
        } else {
            unescape(head[4])?
        };
        let mut j = i + 5;
        while j < toks.len() && !toks[j].starts_with('|') {
            j += 1;
        }
        let mut own: Vec<&str> = toks[i + 5..j].to_vec();
        if own.contains(&"\"") {
            if own.len() != 1 {
                return Err("bad_batch".into());
            }
            own = prev_fields.clone().ok_or("bad_batch")?;
        }
        let mut extras = shared.clone();
        extras.message = None;
        extras.dropped = Dropped::default();
        fields(&mut span, &own, &mut extras)?;
        apply(&mut span, &extras);
        prev_fields = Some(own);
        spans.push(span);
        i = j;
    }
    Ok(spans)
}
