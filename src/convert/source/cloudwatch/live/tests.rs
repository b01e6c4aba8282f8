//! The reconnecting follower against scripted sessions: reconnects, de-duplication across
//! sessions, the sampling notice and fatal errors, with a paused clock.

use super::*;
use std::sync::{Arc, Mutex};

/// One step of a scripted session.
#[derive(Debug, Clone)]
enum Step {
    Update(Update),
    End,
    Fail(LiveError),
}

/// What one `connect` call does: fail, or open a session that plays its steps.
#[derive(Debug, Clone)]
enum Script {
    Refuse(LiveError),
    Play(Vec<Step>),
}

#[derive(Clone, Default)]
struct Scripted {
    scripts: Arc<Mutex<VecDeque<Script>>>,
    connects: Arc<Mutex<Vec<Vec<String>>>>,
}

struct Played(VecDeque<Step>);

impl Session for Played {
    async fn next_update(&mut self) -> Result<Option<Update>, LiveError> {
        match self.0.pop_front() {
            Some(Step::Update(u)) => Ok(Some(u)),
            Some(Step::Fail(e)) => Err(e),
            Some(Step::End) | None => Ok(None),
        }
    }
}

impl Connect for Scripted {
    type Session = Played;

    async fn connect(&self, groups: &[String]) -> Result<Played, LiveError> {
        self.connects.lock().unwrap().push(groups.to_vec());
        let next = self.scripts.lock().unwrap().pop_front();
        match next {
            Some(Script::Play(steps)) => Ok(Played(steps.into())),
            Some(Script::Refuse(e)) => Err(e),
            // The script is over: stop the follower with a fatal error.
            None => Err(stream_error("AccessDeniedException", Verdict::Fatal)),
        }
    }
}

const GROUP: &str = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f";

fn ev(stream: &str, ts: i64, msg: &str) -> LiveEvent {
    LiveEvent {
        log_group: GROUP.into(),
        log_stream: stream.into(),
        timestamp_ms: ts,
        ingestion_ms: ts + 5,
        message: msg.into(),
    }
}

fn update(events: Vec<LiveEvent>, sampled: bool) -> Step {
    Step::Update(Update { events, sampled })
}

fn stream_error(code: &str, verdict: Verdict) -> LiveError {
    LiveError::Stream {
        groups: "g".into(),
        message: code.into(),
        verdict,
    }
}

/// Runs the follower over `scripts` to its end and collects its notices.
async fn run(scripts: Vec<Script>, policy: Policy) -> (Vec<Notice>, Vec<Vec<String>>) {
    let conn = Scripted::default();
    conn.scripts.lock().unwrap().extend(scripts);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(follow(conn.clone(), vec![GROUP.into()], policy, tx));
    let mut notices = Vec::new();
    while let Some(n) = rx.recv().await {
        notices.push(n);
    }
    task.await.unwrap();
    let connects = conn.connects.lock().unwrap().clone();
    (notices, connects)
}

fn messages(notices: &[Notice]) -> Vec<String> {
    notices
        .iter()
        .filter_map(|n| match n {
            Notice::Events(v) => Some(v.iter().map(|e| e.message.clone()).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn reconnects_after_a_timeout_and_a_disconnect_without_repeating_events() {
    let a = ev("s1", 1_000, "a");
    let b = ev("s1", 1_000, "b");
    let c = ev("s2", 1_001, "c");
    let scripts = vec![
        Script::Play(vec![
            update(vec![a.clone(), b.clone()], false),
            Step::Fail(stream_error(
                "SessionTimeoutException",
                classify_stream(Some("SessionTimeoutException")),
            )),
        ]),
        // The next session replays a and b (as moto does) before c.
        Script::Play(vec![
            update(vec![a.clone(), b.clone(), c.clone()], false),
            Step::End,
        ]),
        // A disconnect without a word, then the same again.
        Script::Play(vec![update(vec![b.clone(), c.clone()], false)]),
    ];
    let (notices, connects) = run(scripts, Policy::default()).await;
    assert_eq!(messages(&notices), ["a", "b", "c"]);
    assert_eq!(connects.len(), 4, "three sessions, then the refused fourth");
    assert!(connects.iter().all(|g| g == &[GROUP.to_owned()]));
    let reconnects = notices
        .iter()
        .filter(|n| matches!(n, Notice::Reconnecting { .. }))
        .count();
    assert_eq!(reconnects, 3);
    assert!(matches!(notices.last(), Some(Notice::Failed(_))));
}

#[tokio::test(start_paused = true)]
async fn same_message_in_another_stream_or_millisecond_is_a_new_event() {
    let scripts = vec![Script::Play(vec![
        update(
            vec![ev("s1", 1, "x"), ev("s2", 1, "x"), ev("s1", 2, "x")],
            false,
        ),
        update(vec![ev("s1", 1, "x")], false),
    ])];
    let (notices, _) = run(scripts, Policy::default()).await;
    assert_eq!(messages(&notices), ["x", "x", "x"]);
}

#[tokio::test(start_paused = true)]
async fn events_of_groups_not_asked_for_are_dropped() {
    let mut other = ev("s", 1, "other group");
    other.log_group = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/g".into();
    let mut by_name = ev("s", 2, "named");
    by_name.log_group = "/aws/lambda/f".into();
    let scripts = vec![Script::Play(vec![update(
        vec![other, ev("s", 1, "mine"), by_name],
        false,
    )])];
    let (notices, _) = run(scripts, Policy::default()).await;
    assert_eq!(messages(&notices), ["mine", "named"]);
}

#[tokio::test(start_paused = true)]
async fn a_sampled_update_is_announced_and_its_events_still_delivered() {
    let scripts = vec![Script::Play(vec![
        update(vec![ev("s", 1, "one")], true),
        update(vec![ev("s", 2, "two")], false),
    ])];
    let (notices, _) = run(scripts, Policy::default()).await;
    let sampled = notices
        .iter()
        .filter(|n| matches!(n, Notice::Sampled { .. }))
        .count();
    assert_eq!(sampled, 1);
    assert_eq!(messages(&notices), ["one", "two"]);
}

#[tokio::test(start_paused = true)]
async fn refused_starts_back_off_and_a_fatal_error_stops_the_follower() {
    let throttled = LiveError::Start {
        groups: "g".into(),
        message: "LimitExceededException".into(),
        verdict: Verdict::Throttle,
    };
    let scripts = vec![
        Script::Refuse(throttled.clone()),
        Script::Refuse(throttled.clone()),
        Script::Refuse(throttled),
        Script::Play(vec![update(vec![ev("s", 1, "late")], false)]),
        Script::Refuse(LiveError::Start {
            groups: "g".into(),
            message: "ResourceNotFoundException".into(),
            verdict: Verdict::Fatal,
        }),
    ];
    let policy = Policy {
        reconnect_base: Duration::from_millis(100),
        reconnect_cap: Duration::from_secs(10),
        dedup_window: DEFAULT_DEDUP_WINDOW,
    };
    let started = tokio::time::Instant::now();
    let (notices, connects) = run(scripts, policy).await;
    assert_eq!(connects.len(), 5);
    assert_eq!(messages(&notices), ["late"]);
    let delays: Vec<Duration> = notices
        .iter()
        .filter_map(|n| match n {
            Notice::Reconnecting { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 4);
    assert!(
        delays.iter().all(|d| *d >= Duration::from_millis(100)),
        "{delays:?}"
    );
    // After a session that delivered, the next one starts after the base delay.
    assert_eq!(delays[3], Duration::from_millis(100));
    assert!(started.elapsed() >= Duration::from_millis(400));
    match notices.last() {
        Some(Notice::Failed(e)) => {
            assert!(!e.is_retryable());
            assert!(e.to_string().contains("ResourceNotFoundException"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn seen_forgets_after_the_window_and_a_resighting_extends_it() {
    let mut seen = Seen::new(Duration::from_secs(10));
    assert_eq!(
        seen.admit(vec![ev("s", 1, "a"), ev("s", 2, "b")], 0).len(),
        2
    );
    // `a` seen again at 8 s: remembered until 18 s; `b` is forgotten at 10 s.
    assert!(seen.admit(vec![ev("s", 1, "a")], 8_000).is_empty());
    assert_eq!(seen.admit(vec![ev("s", 2, "b")], 11_000).len(), 1);
    assert!(seen.admit(vec![ev("s", 1, "a")], 17_000).is_empty());
    assert_eq!(seen.admit(vec![ev("s", 1, "a")], 28_000).len(), 1);
    assert_eq!(seen.remembered(), 1);
}

#[test]
fn stream_errors_are_classified() {
    for (code, retry) in [
        (Some("SessionTimeoutException"), true),
        (Some("SessionStreamingException"), true),
        (Some("ThrottlingException"), true),
        (Some("LimitExceededException"), true),
        (Some("ServiceUnavailableException"), true),
        (None, true),
        (Some("AccessDeniedException"), false),
        (Some("ResourceNotFoundException"), false),
        (Some("InvalidParameterException"), false),
    ] {
        let e = stream_error("x", classify_stream(code));
        assert_eq!(e.is_retryable(), retry, "{code:?}");
    }
}

#[test]
fn arns_and_local_endpoints() {
    let arn = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f:*";
    assert_eq!(
        session_arn(arn),
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f"
    );
    assert_eq!(group_name_of(arn), "/aws/lambda/f");
    assert_eq!(group_name_of("/aws/lambda/f"), "/aws/lambda/f");
    for (url, local) in [
        ("http://127.0.0.1:5055", true),
        ("http://localhost:4566/", true),
        ("http://[::1]:5055", true),
        ("http://10.0.0.7:4566", true),
        ("http://moto:5000", true),
        ("https://logs.us-east-1.amazonaws.com", false),
        ("https://vpce-1.logs.us-east-1.vpce.amazonaws.com", false),
    ] {
        assert_eq!(is_local_endpoint(url), local, "{url}");
    }
}
