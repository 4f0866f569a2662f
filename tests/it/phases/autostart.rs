//! The autostart herd: 50 workspaces stopped, all scheduled for one minute, started by the
//! simulator's lifecycle executor (1 s tick), each of the four autostart phases measured from
//! that minute and compared with the simulator's own timestamps; the workspaces the executor
//! skips fail `autostart.created` with `timeout`; schedules cleared, nothing left. Waits for
//! a real minute boundary, so this is the only such test.

use std::time::Duration;

use crate::common::*;
use scaletestd::config::HumanDuration;
use scaletestd::config::scenario::AUTOSTART_WALK;
use scaletestd::phases::Phase;
use scaletestd::report;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_fifty_autostarts_at_one_minute_measured_from_it() {
    let _turn = exclusive();
    let mut sc = fast_sim();
    sc.autostart_tick = HumanDuration(Duration::from_secs(1));
    // Fifty start builds in the same second queue for provisioners, as at 9:00 on Monday.
    sc.provisioners = 10;
    sc.failures.autostart_skip = 0.15;
    let sim = start(sc).await;
    // Ten at a time: a workspace waiting for the herd gives its slot to the next. The
    // minute is at most 70 s after the herd gathers, so 100 s is enough for those the
    // executor starts and bounds the wait of those it skips.
    let cfg = config_text(&sim, 50, 10, "kind = \"autostart\"")
        .scenario_timeout("\"autostart.created\"", "100s")
        .parse();
    assert_eq!(cfg.scenarios[0].phases, AUTOSTART_WALK);
    let r = run(&cfg).await;
    let skipped = Injected {
        knob: "autostart_skip",
        rate: 0.15,
        phase: Phase::AutostartCreated,
        reason: scaletestd::phases::Reason::Timeout,
        says: "autostart.created did not finish within 1m 40s",
    }
    .check(&sim, &r);
    assert_eq!(
        report::summary_line(&r),
        format!(
            "50 workspaces: {} succeeded, {skipped} failed ({skipped} autostart.created: timeout)",
            50 - skipped
        )
    );

    let ledger = sim.ledger();
    let due = ledger[0].autostart_due.expect("a minute was scheduled");
    assert_eq!(due.timestamp() % 60, 0, "a whole minute: {due}");
    let mut diff: [Vec<f64>; 4] = Default::default();
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap() as f64 / 1000.0;
    for w in &r.workspaces {
        let l = ledger.iter().find(|l| l.name == w.name).unwrap();
        assert!(l.deleted, "{}", w.name);
        if w.failure().is_some() {
            assert_eq!(l.autostarts, 0, "{}: skipped by the executor", w.name);
            continue;
        }
        let phases: Vec<Phase> = w.phases.iter().map(|p| p.phase).collect();
        assert_eq!(phases, AUTOSTART_WALK, "{}", w.name);
        assert_eq!(l.autostarts, 1, "{}: started once by the executor", w.name);
        assert_eq!(l.autostart_due, Some(due), "{}: the same minute", w.name);
        assert_eq!(l.autostart_schedule, None, "{}: schedule cleared", w.name);
        assert!(l.deleted, "{}", w.name);
        let b = sim
            .app
            .state
            .build(l.autostart_build.unwrap())
            .expect("the build is kept");
        assert_eq!(b.reason, "autostart");
        let ready_at = b.agents().filter_map(|a| a.ready_at).max().unwrap();
        // The simulator's instants, from the scheduled minute.
        let theirs = [
            ms(b.created_at - due),
            ms(b.job.started_at.unwrap() - due),
            ms(b.job.completed_at.unwrap() - due),
            ms(ready_at - due),
        ];
        let ours: Vec<f64> = [
            Phase::AutostartCreated,
            Phase::AutostartAcquired,
            Phase::AutostartBuilt,
            Phase::AutostartReady,
        ]
        .iter()
        .map(|p| w.record(*p).unwrap().duration.as_secs_f64() * 1000.0)
        .collect();
        // Each record is one interval: it starts at the minute and ends at Coder's instant
        // (before: started_at was when the walk began waiting, 10-70 s earlier).
        for p in [
            Phase::AutostartCreated,
            Phase::AutostartAcquired,
            Phase::AutostartBuilt,
            Phase::AutostartReady,
        ] {
            let rec = w.record(p).unwrap();
            assert_eq!(rec.started_at, due, "{}: {p} starts at the minute", w.name);
        }
        let end = |p: Phase| {
            let rec = w.record(p).unwrap();
            rec.started_at + chrono::TimeDelta::from_std(rec.duration).unwrap()
        };
        assert_eq!(end(Phase::AutostartCreated), b.created_at, "{}", w.name);
        assert_eq!(
            Some(end(Phase::AutostartBuilt)),
            b.job.completed_at,
            "{}",
            w.name
        );
        assert!(
            ours.windows(2).all(|p| p[0] <= p[1]),
            "{}: created ≤ acquired ≤ built ≤ ready: {ours:?}",
            w.name
        );
        // The executor ticks every second: each build exists within about a second.
        assert!(ours[0] < 2500.0, "{}: created {} ms after", w.name, ours[0]);
        for i in 0..4 {
            diff[i].push((ours[i] - theirs[i]).abs());
        }
    }
    for (i, d) in diff.into_iter().enumerate() {
        let p50 = median(d);
        println!("autostart phase {i}: |ours - simulator| p50 {p50:.3} ms");
        assert!(p50 <= 20.0, "phase {i}: p50 {p50} ms off");
    }
    // The herd queued: the last of fifty builds waited for one of ten provisioners.
    let started: Vec<_> = r.workspaces.iter().filter(|w| w.ok).collect();
    let acquired: Vec<f64> = started
        .iter()
        .map(|w| {
            w.record(Phase::AutostartAcquired)
                .unwrap()
                .duration
                .as_secs_f64()
        })
        .collect();
    let created: Vec<f64> = started
        .iter()
        .map(|w| {
            w.record(Phase::AutostartCreated)
                .unwrap()
                .duration
                .as_secs_f64()
        })
        .collect();
    let most_queued = acquired
        .iter()
        .zip(&created)
        .map(|(a, c)| a - c)
        .fold(0.0, f64::max);
    assert!(most_queued > 0.05, "no build queued: {most_queued} s");
    assert!(settle(&sim).await.is_empty());
    assert_eq!(
        sim.request_count("PUT /api/v2/workspaces/{workspace}/autostart"),
        50 + (50 - skipped as u64),
        "one set per workspace and one clear per autostart seen"
    );
}
