//! Deployment files checked by real validators (installed by the test command):
//! kubernetes-validate for the manifests, the Compose specification's schema for the Compose
//! file, and the StatefulSet's shard arithmetic.

use std::process::Command;

use scaletestd::shard::Shard;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| {
            panic!("{cmd} is installed (the test command installs it with pip): {e}")
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let kust =
        std::fs::read_to_string(format!("{ROOT}/deploy/kubernetes/kustomization.yaml")).unwrap();
    let files: Vec<String> = kust
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|f| f.ends_with(".yaml"))
        .map(|f| format!("deploy/kubernetes/{f}"))
        .collect();
    assert!(files.len() >= 8, "{files:?}");
    for f in &files {
        assert!(
            std::path::Path::new(&format!("{ROOT}/{f}")).exists(),
            "{f} is listed and exists"
        );
    }
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = run("kubernetes-validate", &args);
    assert!(ok && !out.contains("ERROR"), "{out}");
    // The operator's kinds have no bundled schema; everything else must have validated.
    for line in out.lines().filter(|l| l.contains("Couldn't find schema")) {
        assert!(
            line.contains("PrometheusRule") || line.contains("ServiceMonitor"),
            "{line}"
        );
    }
}

#[test]
fn the_prometheus_rule_is_the_alerts_file() {
    let out = Command::new("sh")
        .arg(format!("{ROOT}/deploy/kubernetes/gen-prometheusrule.sh"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(format!("{ROOT}/deploy/kubernetes/prometheusrule.yaml")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        committed,
        "run deploy/kubernetes/gen-prometheusrule.sh > deploy/kubernetes/prometheusrule.yaml"
    );
}

#[test]
fn compose_file_matches_the_compose_specification() {
    let (ok, out) = run(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "deploy/compose/docker-compose.yml",
        ],
    );
    assert!(ok, "{out}");
}

#[test]
fn statefulset_shards_cover_every_workspace_once() {
    let sts =
        std::fs::read_to_string(format!("{ROOT}/deploy/kubernetes/statefulset.yaml")).unwrap();
    let replicas: u32 = sts
        .lines()
        .find_map(|l| l.trim().strip_prefix("replicas: "))
        .and_then(|v| v.parse().ok())
        .expect("replicas");
    let shard_of = sts
        .lines()
        .skip_while(|l| !l.contains("SCALETESTD_SHARD"))
        .find_map(|l| l.trim().strip_prefix("value: "))
        .expect("SCALETESTD_SHARD value")
        .trim_matches('"')
        .to_string();
    for count in [1, 2, 3, 10, 100, 1000, 99_999] {
        let mut covered = vec![false; count as usize + 1];
        for i in 0..replicas {
            // What the pod sees once Kubernetes expands $(POD_NAME).
            let value = shard_of.replace("$(POD_NAME)", &format!("scaletestd-{i}"));
            let shard = Shard::parse(&value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(
                shard.total, replicas,
                "the /N of SCALETESTD_SHARD matches replicas"
            );
            let s = shard.slice(count);
            for n in s.first..s.first + s.count {
                assert!(
                    !covered[n as usize],
                    "workspace {n} of {count} in two shards"
                );
                covered[n as usize] = true;
            }
        }
        assert!(
            covered[1..].iter().all(|c| *c),
            "every workspace of {count} is in a shard"
        );
    }
}

#[test]
fn systemd_unit_is_hardened_and_reloads_with_sighup() {
    let unit =
        std::fs::read_to_string(format!("{ROOT}/deploy/systemd/scaletestd.service")).unwrap();
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let (ok, out) = run(
            "systemd-analyze",
            &["verify", "--man=no", "deploy/systemd/scaletestd.service"],
        );
        // verify complains about a missing binary or user on a build machine; not about syntax.
        assert!(
            ok || !out.contains("Unknown key") && !out.contains("Failed to parse"),
            "{out}"
        );
    }
}
