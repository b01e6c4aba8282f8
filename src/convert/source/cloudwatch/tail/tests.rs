use super::super::filter::sort_events;
use super::super::late::NOTICE_EVERY_MS;
use super::*;
use std::collections::HashMap;

fn ev(ts: i64, id: &str) -> Event {
    Event {
        log_stream: "s".into(),
        timestamp_ms: ts,
        ingestion_ms: ts,
        event_id: id.into(),
        message: id.into(),
    }
}

fn ids(v: &[Event]) -> Vec<&str> {
    v.iter().map(|e| e.event_id.as_str()).collect()
}

#[test]
fn rereads_are_deduplicated_and_old_ids_forgotten() {
    let mut w = Window::new();
    let got = w.admit(vec![ev(9_000, "1"), ev(9_000, "2")]);
    assert_eq!(ids(&got), ["1", "2"]);
    // A re-read, plus a third event of the same millisecond ingested late and an event
    // back-dated by a minute.
    let got = w.admit(vec![
        ev(9_000, "1"),
        ev(9_000, "2"),
        ev(9_000, "3"),
        ev(70_000, "5"),
    ]);
    assert_eq!(ids(&got), ["3", "5"]);
    // Events before the window's start are forgotten: memory holds one window.
    w.forget_before(10_000);
    assert_eq!(w.remembered(), 1);
    let got = w.admit(vec![ev(70_000, "5"), ev(65_000, "4")]);
    assert_eq!(ids(&got), ["4"]);
}

#[test]
fn the_ids_remembered_are_capped_and_the_forgotten_counted() {
    let mut w = Window::new();
    let events: Vec<Event> = (0..MAX_REMEMBERED as i64 + 3)
        .map(|i| ev(i, &format!("{i:056}")))
        .collect();
    assert_eq!(w.admit(events).len(), MAX_REMEMBERED + 3);
    assert_eq!((w.remembered(), w.forgotten), (MAX_REMEMBERED, 3));
    // The newest are still recognised, the oldest not.
    let (zero, nine) = (format!("{:056}", 0), format!("{:056}", 9));
    let again = w.admit(vec![ev(0, &zero), ev(9, &nine)]);
    assert_eq!(ids(&again), [zero.as_str()]);
}

#[test]
fn events_without_ids_are_kept() {
    let mut w = Window::new();
    assert_eq!(w.admit(vec![ev(1, ""), ev(1, "")]).len(), 2);
}

#[test]
fn the_head_reads_from_the_start_then_from_its_lag_before_the_last_poll() {
    let mut s = Schedule::new(0, 200_000, 2_000, 120_000);
    let reads = s.plan(200_000);
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!((reads[0].start_ms, reads[0].end_ms), (0, None));
    s.done(&reads[0]);
    // No lag measured yet: the head goes on from the poll.
    let reads = s.plan(202_000);
    assert_eq!((reads[0].pass, reads[0].start_ms), (Pass::Head, 200_000));
    // A failed read is planned again from the same start.
    let reads = s.plan(204_000);
    assert_eq!(reads[0].start_ms, 200_000);
    s.done(&reads[0]);
    // With lags of 1.5 s measured the head reads 1 s (half the interval, at most) again.
    let lagged: Vec<Event> = (0..10)
        .map(|i| Event {
            ingestion_ms: 203_000 + i,
            ..ev(201_500 + i, &i.to_string())
        })
        .collect();
    assert_eq!(s.observe(&lagged, 204_000), None);
    assert_eq!(s.head_lag_ms(), 1_000);
    let reads = s.plan(206_000);
    assert_eq!(reads[0].start_ms, 204_000);
    s.done(&reads[0]);
    assert_eq!(s.plan(208_000)[0].start_ms, 205_000);
}

#[test]
fn sweeps_read_each_millisecond_once_at_the_overlap() {
    let (interval, overlap) = (2_000, 120_000);
    let mut s = Schedule::new(0, 200_000, interval, overlap);
    assert_eq!(s.sweep_ms(), 15_000);
    let mut finals = Vec::new();
    for now in (200_000..600_000).step_by(interval as usize) {
        for r in s.plan(now) {
            assert_ne!(r.pass, Pass::Late, "no lag measured: the late pass is off");
            if r.pass == Pass::Final {
                finals.push((r.start_ms, r.end_ms));
            }
            s.done(&r);
        }
    }
    // Contiguous, without gaps or overlaps, from the window's start at the first poll.
    assert_eq!(finals[0].0, 200_000 - overlap);
    for w in finals.windows(2) {
        assert_eq!(w[1].0, w[0].1.unwrap() + 1, "{finals:?}");
    }
    // Never more than a sweep and an interval behind the overlap.
    let last = finals.last().unwrap().1.unwrap();
    assert!(
        last >= 600_000 - overlap - s.sweep_ms() - interval,
        "{last}"
    );
}

#[test]
fn the_late_pass_is_on_only_when_it_comes_well_before_the_overlap() {
    let lags = |lag: i64| -> Vec<Event> {
        (0..100)
            .map(|i| Event {
                ingestion_ms: 100_000 + lag,
                ..ev(100_000, &i.to_string())
            })
            .collect()
    };
    let mut s = Schedule::new(0, 200_000, 2_000, 120_000);
    assert!(!s.late_pass_on(), "nothing measured");
    s.observe(&lags(500), 200_000);
    assert!(!s.late_pass_on(), "the head has them");
    s.observe(&lags(20_000), 200_000);
    assert!(s.late_pass_on());
    assert_eq!(s.late_window_ms(), 30_000);
    let mut s = Schedule::new(0, 200_000, 2_000, 120_000);
    s.observe(&lags(80_000), 200_000);
    assert!(!s.late_pass_on(), "the final pass comes soon enough");
    assert_eq!(s.late_window_ms(), 120_000);
}

/// A tiny deterministic generator (no dependency for a test workload).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Events as a log group holds them: each is returned by reads only once ingested.
struct Group(Vec<Event>);

impl Group {
    fn read(&self, r: &Read, now_ms: i64) -> Vec<Event> {
        let mut out: Vec<Event> = self
            .0
            .iter()
            .filter(|e| e.ingestion_ms <= now_ms && e.timestamp_ms >= r.start_ms)
            .filter(|e| r.end_ms.is_none_or(|end| e.timestamp_ms <= end))
            .cloned()
            .collect();
        sort_events(&mut out);
        out
    }

    fn last_ingested(&self) -> i64 {
        self.0.iter().map(|e| e.ingestion_ms).max().unwrap_or(0)
    }
}

/// The workload: 1,000 events over 180 s from `t0`, 10 % ingested 30–90 s late, the
/// others within a second, and 40 groups of three events sharing one millisecond.
fn late_and_same_millisecond(t0: i64) -> Group {
    let mut rng = Lcg(15);
    let mut events = Vec::new();
    for i in 0..1_000 {
        let ts = t0 + rng.below(180_000) as i64;
        let lag = if i % 10 == 0 {
            30_000 + rng.below(60_001) as i64
        } else {
            rng.below(1_001) as i64
        };
        let n = if i % 25 == 0 { 3 } else { 1 };
        for k in 0..n {
            events.push(Event {
                log_stream: format!("stream-{}", i % 7),
                timestamp_ms: ts,
                ingestion_ms: ts + lag + k,
                event_id: format!("{:056}", i * 10 + k),
                message: format!("event {i} {k}"),
            });
        }
    }
    Group(events)
}

#[derive(Debug, Default)]
struct Run {
    delivered: HashMap<String, u32>,
    returned: u64,
    /// (poll time, notice)
    notices: Vec<(i64, LateNotice)>,
    counted: HashMap<&'static str, u64>,
}

impl Run {
    fn returned_per_delivered(&self) -> f64 {
        self.returned as f64 / self.delivered.values().sum::<u32>() as f64
    }
}

/// `tail --poll` started at `t0` with these flags on `group`, until the final pass has read
/// everything it holds, through the same [`GroupPoll`] the source drives.
fn tail(group: &Group, t0: i64, interval: i64, overlap: i64) -> Run {
    let mut g = GroupPoll::new(t0 - overlap, t0, interval, overlap);
    let mut run = Run::default();
    let end = group.last_ingested() + overlap + 2 * g.schedule.sweep_ms() + interval;
    let mut now = t0;
    while now <= end {
        for r in g.schedule.plan(now) {
            let page = group.read(&r, now);
            run.returned += page.len() as u64;
            let taken = g.take(page, now);
            for e in &taken.fresh {
                *run.delivered.entry(e.event_id.clone()).or_default() += 1;
            }
            for (k, n) in taken.counted {
                *run.counted.entry(k).or_default() += n;
            }
            run.notices.extend(taken.notice.map(|n| (now, n)));
            g.schedule.done(&r);
        }
        g.polled();
        assert!(g.window.remembered() <= group.0.len());
        now += interval;
    }
    run
}

/// What `tail --poll` did before: the whole overlap on every poll.
fn tail_rereading_the_window(group: &Group, t0: i64, interval: i64, overlap: i64) -> f64 {
    let (mut returned, mut w) = (0, Window::new());
    let mut delivered = 0;
    let mut now = t0;
    while now <= group.last_ingested() + interval {
        let r = Read {
            pass: Pass::Head,
            start_ms: now - overlap,
            end_ms: None,
            resume_ms: 0,
        };
        let page = group.read(&r, now);
        returned += page.len();
        delivered += w.admit(page).len();
        now += interval;
    }
    returned as f64 / delivered as f64
}

#[test]
fn late_and_same_millisecond_events_come_once_for_at_most_three_reads_each() {
    let t0 = 1_700_000_000_000;
    let group = late_and_same_millisecond(t0);
    assert_eq!(group.0.len(), 1_080);
    // The default interval (5 s) and the bench (2 s), at the default overlap.
    for interval in [5_000, 2_000] {
        let run = tail(&group, t0, interval, 120_000);
        for e in &group.0 {
            assert_eq!(run.delivered.get(&e.event_id), Some(&1), "{e:?}");
        }
        assert_eq!(run.delivered.len(), group.0.len());
        let ratio = run.returned_per_delivered();
        let before = tail_rereading_the_window(&group, t0, interval, 120_000);
        eprintln!(
            "interval {interval} ms: {ratio:.2} events returned per delivered event \
             (re-reading the window: {before:.1})"
        );
        assert!(ratio <= 3.0, "{ratio}");
        assert!(before > 20.0, "{before}");
        assert!(run.notices.is_empty(), "{:?}", run.notices);
        assert!(run.counted.is_empty(), "{:?}", run.counted);
    }
}

#[test]
fn events_later_than_the_overlap_are_warned_about_before_the_first_is_lost() {
    // One event a second whose lag grows by 0.1 s each: from 0 to 150 s over 25 minutes.
    let (t0, overlap) = (1_700_000_000_000, 120_000);
    let group = Group(
        (0..1_500)
            .map(|i| Event {
                ingestion_ms: t0 + i * 1_000 + i * 100,
                ..ev(t0 + i * 1_000, &format!("{i:056}"))
            })
            .collect(),
    );
    let run = tail(&group, t0, 2_000, overlap);
    let lost: Vec<&Event> = group
        .0
        .iter()
        .filter(|e| !run.delivered.contains_key(&e.event_id))
        .collect();
    assert!(run.delivered.values().all(|n| *n == 1));
    let first_lost = lost
        .first()
        .expect("events later than the overlap are lost");
    assert!(first_lost.ingestion_ms - first_lost.timestamp_ms > overlap);
    // Nothing within the overlap is lost.
    assert!(lost
        .iter()
        .all(|e| e.ingestion_ms - e.timestamp_ms > overlap));
    // The warning came before the first lost event was even ingested, and says what to do.
    let (at, notice) = run.notices.first().expect("a warning");
    assert!(*at < first_lost.ingestion_ms, "{at} {first_lost:?}");
    assert!(notice.lag_ms * 4 > overlap * 3, "{notice:?}");
    let text = notice.to_string();
    assert!(text.contains("raise --overlap"), "{text}");
    assert!(text.contains("of --overlap 120 s"), "{text}");
    // At most one a minute.
    for w in run.notices.windows(2) {
        assert!(w[1].0 - w[0].0 >= NOTICE_EVERY_MS, "{:?}", run.notices);
    }
    // Counted: the events near the edge, and those caught past it.
    let near = group
        .0
        .iter()
        .filter(|e| (e.ingestion_ms - e.timestamp_ms) * 4 > overlap * 3)
        .filter(|e| e.ingestion_ms - e.timestamp_ms <= overlap)
        .count() as u64;
    assert_eq!(run.counted.get("late_near_window"), Some(&near));
    let beyond = run.counted.get("late_beyond_window").copied().unwrap_or(0);
    assert_eq!(
        beyond as usize + lost.len(),
        group
            .0
            .iter()
            .filter(|e| e.ingestion_ms - e.timestamp_ms > overlap)
            .count()
    );
    assert!(beyond > 0, "some were caught by luck: {:?}", run.counted);
    assert!(
        run.notices.iter().any(|(_, n)| n.beyond > 0),
        "{:?}",
        run.notices
    );
}

#[test]
fn a_round_reads_every_groups_head_before_any_sweep() {
    let (interval, overlap, now) = (5_000, 120_000, 200_000);
    let mut groups: Vec<GroupPoll> = (0..3)
        .map(|_| GroupPoll::new(now - overlap, now, interval, overlap))
        .collect();
    let passes = |round: &[(usize, Read)]| -> Vec<(usize, Pass)> {
        round.iter().map(|(i, r)| (*i, r.pass)).collect()
    };
    // Lags that turn the late pass on: a sweep then reads late and final passes per group.
    let lagged: Vec<Event> = (0..100)
        .map(|i| Event {
            ingestion_ms: now - 50_000 + if i < 95 { 0 } else { 20_000 },
            ..ev(now - 50_000, &i.to_string())
        })
        .collect();
    for g in &mut groups {
        g.schedule.observe(&lagged, now);
        assert!(g.schedule.late_pass_on());
    }
    let mut t = now;
    let mut sweeps = 0;
    while t <= now + 4 * 15_000 {
        let round = plan_round(&mut groups, t);
        let heads = round
            .iter()
            .take_while(|(_, r)| r.pass == Pass::Head)
            .count();
        assert_eq!(heads, 3, "{:?}", passes(&round));
        // Heads in group order, then each group's sweep reads in pass order.
        assert_eq!(
            passes(&round[..3]),
            [(0, Pass::Head), (1, Pass::Head), (2, Pass::Head)]
        );
        if round.len() > 3 {
            sweeps += 1;
            assert_eq!(
                passes(&round[3..]),
                [
                    (0, Pass::Late),
                    (0, Pass::Final),
                    (1, Pass::Late),
                    (1, Pass::Final),
                    (2, Pass::Late),
                    (2, Pass::Final)
                ]
            );
        }
        for (i, r) in &round {
            groups[*i].schedule.done(r);
        }
        t += interval;
    }
    assert_eq!(sweeps, 4);
}

#[test]
fn a_round_slower_than_twice_the_interval_falls_behind() {
    assert!(!falls_behind(5_000, 9_000));
    assert!(falls_behind(5_000, 10_001));
    // Short intervals: a second behind at least.
    assert!(!falls_behind(300, 1_000));
    assert!(falls_behind(300, 1_300));
    let text = behind_notice(40, 2_000, 9_500, 12_250);
    assert!(text.contains("40 log groups took 9.5 s"), "{text}");
    assert!(text.contains("starts 12.2 s before now"), "{text}");
    assert!(
        text.contains("--max-tps") && text.contains("--interval 2.0 s"),
        "{text}"
    );
}
