//! `examples/ci/mcpctl.yml` is YAML that parses, and it keeps the promises
//! its README makes: validate, a Markdown plan whose exit code 2 passes, one
//! comment found by the plan's own marker, and only GitHub's own actions.

use serde_json::Value;

fn workflow() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ci/mcpctl.yml");
    let text = std::fs::read_to_string(path).expect("read the workflow");
    serde_saphyr::from_str(&text).expect("the workflow is YAML")
}

fn steps<'a>(wf: &'a Value, job: &str) -> &'a [Value] {
    wf["jobs"][job]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("job {job} has steps"))
}

fn step<'a>(steps: &'a [Value], needle: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains(needle)))
        .unwrap_or_else(|| panic!("a step runs {needle:?}"))
}

#[test]
fn the_ci_example_plans_into_one_comment_and_applies_main() {
    let wf = workflow();
    assert!(wf["on"]["pull_request"].is_object() && wf["on"]["push"].is_object());

    let plan_job = &wf["jobs"]["plan"];
    assert_eq!(plan_job["permissions"]["pull-requests"], "write");
    let plan = steps(&wf, "plan");
    step(plan, "mcpctl validate fleet/");
    let planning = step(plan, "-o markdown");
    let run = planning["run"].as_str().unwrap_or_default();
    assert!(run.contains("mcpctl plan fleet/") && run.contains("--detailed-exitcode"));
    assert!(run.contains("2)"), "exit 2 (changes) is handled: {run}");
    let env = planning["env"].as_object().expect("the plan step has env");
    assert!(
        env.keys().any(|k| k.starts_with("MCPCTL_SECRET_")),
        "secrets reach the plan as MCPCTL_SECRET_<NAME>_<KEY>"
    );

    let script = plan
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/github-script@"))
        })
        .and_then(|s| s["with"]["script"].as_str())
        .expect("a github-script step posts the comment");
    assert!(
        script.contains(&format!("'{}'", mcpctl::plan::MARKDOWN_MARKER)),
        "the comment is found by the marker the plan writes"
    );
    assert!(script.contains("updateComment") && script.contains("createComment"));

    let apply = steps(&wf, "apply");
    step(apply, "mcpctl apply fleet/ --wait");

    for step in plan.iter().chain(apply) {
        if let Some(uses) = step["uses"].as_str() {
            assert!(
                uses.starts_with("actions/"),
                "only GitHub's own actions: {uses}"
            );
        }
    }
}
