//! Speaking Coder as it is: deleted workspaces answer 410 Gone, and every caller that asks
//! "is it gone?" takes 404 and 410 alike.

mod common;

use common::*;
use scaletestd::report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_workspaces_are_410_and_deletes_succeed_on_it() {
    let sim = start(fast_sim()).await;
    let cfg = config(&sim, 6, 6, "");
    let r = run(&cfg).await;
    assert_eq!(
        report::summary_line(&r),
        "6 workspaces: 6 succeeded, 0 failed"
    );

    // What a real Coder answers for each of them now (coderd/workspaces.go).
    let c = client(&cfg);
    for w in &r.workspaces {
        let id = w.id.expect("created");
        let err = c.workspace(id).await.expect_err("deleted");
        assert_eq!(err.status(), Some(410), "{err}");
        assert!(err.is_gone());
        assert!(
            err.to_string().contains(&format!(
                "Workspace \"{id}\" was deleted, you can view this workspace by specifying '?deleted=true'"
            )),
            "{err}"
        );
    }
    // Never existed: 404, gone too.
    let err = c
        .workspace(uuid::Uuid::new_v4())
        .await
        .expect_err("unknown");
    assert_eq!(err.status(), Some(404));
    assert!(err.is_gone());

    // `include_deleted=true` still shows it, with its succeeded delete build.
    let id = r.workspaces[0].id.unwrap();
    let text = reqwest::Client::new()
        .get(format!(
            "{}api/v2/workspaces/{id}?include_deleted=true",
            sim.url()
        ))
        .header("Coder-Session-Token", TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["latest_build"]["transition"], "delete");
    assert_eq!(body["latest_build"]["status"], "deleted");
    let bad = reqwest::Client::new()
        .get(format!(
            "{}api/v2/workspaces/{id}?include_deleted=maybe",
            sim.url()
        ))
        .header("Coder-Session-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // A second delete of a deleted workspace finds it gone and posts nothing.
    let posts = sim.request_count("POST /api/v2/workspaces/{workspace}/builds");
    scaletestd::phases::delete::run(&c, id, None)
        .await
        .expect("deleting a deleted workspace is done at once");
    assert_eq!(
        sim.request_count("POST /api/v2/workspaces/{workspace}/builds"),
        posts
    );
    assert!(settle(&sim).await.is_empty());
}
