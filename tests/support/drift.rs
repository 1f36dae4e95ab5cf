//! What `get` and `describe` show of live drift, which must be the same on
//! every runtime: alpha's unit restarted once behind mcpctl's back, and
//! beta's is gone. Neither record changes: they only look.

use serde_json::Value;

/// Runs `get instances` (text and JSON) and `describe instance ALPHA`
/// through `run` (arguments to `(exit code, stdout)`) and checks them.
pub fn assert_live_drift(run: impl Fn(&[&str]) -> (i32, String), alpha: &str, beta: &str) {
    let (code, out) = run(&["get", "instances"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("RUNNING (container restarted, 1 restarts)"),
        "{out}"
    );
    assert!(out.contains("RUNNING (container gone)"), "{out}");

    let (_, out) = run(&["get", "instances", "-o", "json"]);
    let rows: Vec<Value> = serde_json::from_str(&out).expect("json");
    let row = |id: &str| rows.iter().find(|i| i["id"] == id).cloned().expect("row");
    let a = row(alpha);
    assert_eq!(a["status"], "RUNNING", "the record is unchanged");
    assert_eq!(a["live"]["state"], "running");
    assert_eq!(a["live"]["restarts"], 1);
    assert_eq!(a["live"]["drift"], "container restarted, 1 restarts");
    assert_eq!(row(beta)["live"]["state"], "gone");

    // `get servers` counts from the same look: neither instance is ready,
    // and the record alone still says both are.
    let ready = |args: &[&str]| {
        let (code, out) = run(args);
        assert_eq!(code, 0, "{out}");
        let rows: Vec<Value> = serde_json::from_str(&out).expect("servers json");
        rows.iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or("").to_owned(),
                    s["ready"].as_u64(),
                )
            })
            .collect::<Vec<_>>()
    };
    let both = |n: u64| vec![("alpha".to_owned(), Some(n)), ("beta".to_owned(), Some(n))];
    assert_eq!(ready(&["get", "servers", "-o", "json"]), both(0));
    assert_eq!(
        ready(&["get", "servers", "-o", "json", "--refresh=false"]),
        both(1)
    );
    let (_, out) = run(&["get", "servers"]);
    assert!(out.contains("0/1") && !out.contains("1/1"), "{out}");
    assert!(out.contains("drift: container gone"), "{out}");
    assert!(
        out.contains("drift: container restarted, 1 restarts"),
        "{out}"
    );

    let (_, out) = run(&["describe", "instance", alpha]);
    assert!(
        out.contains("(container restarted, 1 restarts)") && out.contains("running, restarts 1"),
        "{out}"
    );
}
