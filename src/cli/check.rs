//! `scaletestd check`: the configuration is valid, Coder answers, the token is accepted, and
//! every scenario's template and parameters exist.

use std::path::Path;

use super::{EXIT_FAILED, EXIT_OK};

pub async fn run(path: &Path, cfg: crate::config::Config) -> u8 {
    println!(
        "ok   configuration {} ({} scenarios)",
        path.display(),
        cfg.scenarios.len()
    );
    let client = super::client(&cfg);
    let mut failed = false;
    match client.build_info().await {
        Ok(b) => println!("ok   Coder {} answers at {}", b.version, cfg.coder.url),
        Err(e) => {
            println!("FAIL Coder at {}: {e}", cfg.coder.url);
            return EXIT_FAILED;
        }
    }
    match client.server_traces().await {
        Ok(true) => {
            println!("ok   Coder traces requests (X-Trace-ID): its server spans join our traces")
        }
        Ok(false) => println!(
            "note Coder does not trace requests (no X-Trace-ID): set CODER_TRACE_ENABLE=true on coderd to see its spans in our traces"
        ),
        Err(e) => println!("note cannot tell whether Coder traces requests: {e}"),
    }
    match client.me().await {
        Ok(u) => println!("ok   session token accepted (user {:?})", u.username),
        Err(e) => {
            println!("FAIL session token: {e}");
            return EXIT_FAILED;
        }
    }
    for s in &cfg.scenarios {
        match crate::runner::prepare(&client, s, cfg.coder.organization.as_deref()).await {
            Ok(b) => println!(
                "ok   scenario {:?}: template {:?} with {} parameters",
                s.name,
                b.template_name,
                b.parameters.len()
            ),
            Err(e) => {
                failed = true;
                println!("FAIL scenario {:?}: {}", s.name, e.message);
            }
        }
    }
    if failed { EXIT_FAILED } else { EXIT_OK }
}
