//! The simulator held against a real coderd call by call (issue 23): the same calls to
//! both, every field, JSON type, status, error message and watch-ws state order compared.
//! Each difference this found was fixed in the simulator, citing Coder's file; `ALLOWED`
//! holds the ones that stay, each with its reason.

use super::real_coder_here;
use crate::common::real::{OTLP, RealCoder};
use crate::common::shape;

mod side;

use side::Side;

/// The simulator answers as coderd does: the same calls to both, and every field, JSON
/// type, status, error message and watch-ws state order compared (issue 23). Each
/// difference this found was fixed in the simulator, citing Coder's file; the allowances
/// below are the ones that stay, each with its reason.
#[test]
fn the_simulator_answers_as_coderd_does() {
    let (_turn, coder, rt) = real_coder_here("scshape", Some(OTLP));
    rt.block_on(conformance(&coder));
}

async fn conformance(coder: &RealCoder) {
    let sim = scaletestd::sim::Sim::start(
        scaletestd::sim::SimConfig::default(),
        crate::common::TOKEN,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the simulator starts");
    let mut real = Side::new(
        "coderd",
        coder.get("CODER_URL"),
        coder.get("CODER_SESSION_TOKEN"),
        coder.get("CODER_TEMPLATE"),
    );
    let mut ours = Side::new(
        "simulator",
        sim.url().as_str(),
        crate::common::TOKEN,
        "docker",
    );
    ours.parameters =
        serde_json::json!([{"name": "image", "value": "codercom/enterprise-base:ubuntu"}]);
    real.walk().await;
    ours.walk().await;
    // The create form of a template with dynamic parameters on each side.
    real.form(
        coder.get("CODER_DYNAMIC_TEMPLATE"),
        r#"{"region": "us", "zone": "us-west", "cpu": "99"}"#,
    )
    .await;
    ours.form("docker", r#"{"region": "us", "cpu": "99"}"#)
        .await;
    // Both trace (coderd with --otlp): neither echoes our span id; without a traceparent
    // both answer an X-Trace-ID of their own (tests/it/external/coder/features.rs: both off).
    for propagate in [true, false] {
        let probe = |url: &str, token: &str| {
            scaletestd::coder::Client::new(
                url.parse().unwrap(),
                scaletestd::secret::Secret::new(token),
                Default::default(),
            )
        };
        let r = probe(coder.get("CODER_URL"), coder.get("CODER_SESSION_TOKEN"))
            .probe_tracing(propagate)
            .await
            .unwrap();
        let o = probe(sim.url().as_str(), crate::common::TOKEN)
            .probe_tracing(propagate)
            .await
            .unwrap();
        assert_eq!((r, o), (Some(true), Some(true)), "propagate {propagate}");
    }

    let mut diffs = Vec::new();
    for (what, (status, body)) in &real.answers {
        let Some((s, b)) = ours.answers.get(what) else {
            diffs.push(format!("{what}: the simulator was not asked"));
            continue;
        };
        if s != status {
            diffs.push(format!(
                "{what}: coderd answered {status}, the simulator {s}"
            ));
        }
        // An error's message and validations are what clients match on: to the letter, but
        // for the workspace's own id and name.
        if status / 100 != 2 {
            for key in ["message", "validations"] {
                let norm = |side: &Side, v: &serde_json::Value| {
                    shape::without_ids(&v[key].to_string()).replace(&side.workspace, "{name}")
                };
                let (r, o) = (norm(&real, body), norm(&ours, b));
                if r != o {
                    diffs.push(format!("{what}: coderd's {key} {r}, the simulator's {o}"));
                }
            }
        }
        diffs.extend(
            shape::differences(what, &shape::shape(body), &shape::shape(b))
                .into_iter()
                .filter(|d| !ALLOWED.iter().any(|(path, _)| d.contains(path))),
        );
    }
    // The order of the states a phase decides on. Which passing states a stream shows
    // depends on when it opened and how fast the agent went (coderd reads the workspace
    // when it sends, so a state gone by then is never seen): the states both streams
    // showed must come in the same order, and both must show where each wait ended.
    println!("coderd's watch-ws states: {:#?}", real.states);
    println!("the simulator's watch-ws states: {:#?}", ours.states);
    let shared = |a: &Side, b: &Side| -> Vec<String> {
        a.states
            .iter()
            .filter(|st| b.states.contains(st))
            .cloned()
            .collect()
    };
    if shared(&real, &ours) != shared(&ours, &real) {
        diffs.push(format!(
            "watch-ws: the states both showed come in another order: coderd {:?}, the simulator {:?}",
            shared(&real, &ours),
            shared(&ours, &real)
        ));
    }
    // And every state coderd showed, the simulator shows too (its agents pass through each
    // state for tens of milliseconds or more), but a job still pending: a provisioner that
    // takes it before the stream opens is a matter of timing on either side.
    for st in &real.states {
        if !st.contains("(job pending)") && !ours.states.contains(st) {
            diffs.push(format!(
                "watch-ws: coderd showed {st:?}, the simulator never does"
            ));
        }
    }
    for end in [
        "start running (job succeeded), agent connected/ready",
        "delete deleted (job succeeded)",
    ] {
        for side in [&real, &ours] {
            if !side.states.iter().any(|st| st == end) {
                diffs.push(format!("watch-ws: {} never showed {end:?}", side.label));
            }
        }
    }
    for d in &diffs {
        println!("difference: {d}");
    }
    assert!(diffs.is_empty(), "{} differences (above)", diffs.len());
    println!(
        "the simulator answers as coderd {} does: {} calls compared field by field, {} watch-ws states shown by both in the same order",
        coder.get("CODER_VERSION"),
        real.answers.len(),
        shared(&real, &ours).len()
    );
}

/// Differences that stay, each with its reason.
const ALLOWED: &[(&str, &str)] = &[
    (
        "agents[].directory`",
        "the simulator's template (a Docker one) sets the agent's directory; the echo template \
         sets none, and coderd omits it when empty (codersdk.WorkspaceAgent `directory,omitempty`)",
    ),
    (
        "build.has_",
        "`has_ai_task` and `has_external_agent` are `*bool`s coderd omits until its job \
         completion writes them (coderd/provisionerdserver/provisionerdserver.go \
         `UpdateWorkspaceBuildFlagsByID`); whether the event that shows a build ended has them \
         yet differs from run to run; the simulator sets both when the job ends",
    ),
    (
        "agents[].latency",
        "coderd shows an agent's DERP latencies once its first stats report arrives, seconds \
         after it connects or not yet (`latency,omitempty`); the simulator's agents report at once",
    ),
];
