//! The gateway's pure parts: the routing table from snapshots, the choice
//! of instance, the pin table's cap, and the access checks.

use super::access::{Access, Denial, check_listen};
use super::balance::{Outstanding, Pin, Pins};
use super::proxy::server_of;
use super::table::{Backend, Refusal, Table, Upstream};
use crate::model::{
    AppliedSpec, Endpoint, Instance, InstanceId, Snapshot, SpecHash, Status, Timestamp,
};
use hyper::header::{HeaderMap, HeaderValue};
use std::sync::Arc;

fn instance(
    id: &str,
    server: &str,
    status: Status,
    endpoint: Option<Endpoint>,
    reason: &str,
    at: i64,
) -> Instance {
    let mut i = Instance::starting(
        InstanceId(id.to_owned()),
        server,
        SpecHash("h".into()),
        "created",
        Timestamp(0),
    );
    i.endpoint = endpoint;
    i.transition(status, reason, Timestamp(at));
    i
}

fn http(port: u16) -> Option<Endpoint> {
    Some(Endpoint::Http(format!("http://127.0.0.1:{port}/mcp")))
}

fn snapshot(instances: Vec<Instance>) -> Snapshot {
    let mut s = Snapshot::default();
    for i in instances {
        s.servers.entry(i.server.clone()).or_insert(AppliedSpec {
            hash: SpecHash("h".into()),
            canonical: String::new(),
            replicas: 1,
            applied_at: Timestamp(0),
            previous: None,
        });
        s.instances.insert(i.id.clone(), i);
    }
    s
}

fn ids(backends: &[Backend]) -> Vec<&str> {
    backends.iter().map(|b| b.instance.0.as_str()).collect()
}

#[test]
fn only_running_instances_with_an_http_endpoint_are_routes() {
    let table = Table::from_snapshot(&snapshot(vec![
        instance("a", "web", Status::Running, http(1), "ready", 1),
        instance("b", "web", Status::Starting, http(2), "probing", 1),
        instance("c", "web", Status::Error, http(3), "crashed", 1),
        instance("d", "web", Status::Running, http(4), "ready", 1),
        instance("e", "web", Status::Running, None, "ready", 1),
    ]));
    let backends = table.backends("web").expect("web is routable");
    assert_eq!(ids(backends), ["a", "d"]);
    assert_eq!(
        backends[1].upstream,
        Upstream::Http("http://127.0.0.1:4/mcp".into())
    );
    assert!(table.is_routable("web", &InstanceId("a".into())));
    assert!(!table.is_routable("web", &InstanceId("b".into())));
}

#[test]
fn a_server_without_a_running_instance_names_its_statuses_and_reasons() {
    let table = Table::from_snapshot(&snapshot(vec![
        instance(
            "a",
            "github",
            Status::Starting,
            http(1),
            "not ready after 60s: refused",
            2,
        ),
        instance("b", "github", Status::Error, http(2), "older crash", 1),
        instance(
            "c",
            "github",
            Status::Error,
            http(3),
            "exited with code 3",
            5,
        ),
    ]));
    assert_eq!(
        table.backends("github"),
        Err(Refusal::Unavailable(
            "github has no RUNNING instance: 1 STARTING (not ready after 60s: refused), 2 ERROR (exited with code 3)"
                .into()
        ))
    );
}

#[test]
fn a_running_stdio_instance_is_a_route_through_its_unit_and_an_unknown_server_is_unknown() {
    let mut with_unit = instance(
        "a",
        "files",
        Status::Running,
        Some(Endpoint::Stdio),
        "ready",
        1,
    );
    with_unit.handle = Some("c0ffee".into());
    // RUNNING, but no unit recorded to attach to.
    let without = instance(
        "b",
        "notes",
        Status::Running,
        Some(Endpoint::Stdio),
        "ready",
        1,
    );
    let mut s = snapshot(vec![with_unit, without]);
    s.servers.insert("empty".into(), s.servers["files"].clone());
    let table = Table::from_snapshot(&s);
    let files = table.backends("files").expect("files is routable");
    assert_eq!(
        files[0].upstream,
        Upstream::Stdio {
            handle: "c0ffee".into()
        }
    );
    assert_eq!(
        table.backends("notes"),
        Err(Refusal::Unavailable(
            "notes has no RUNNING instance: 1 RUNNING (no endpoint or unit recorded)".into()
        ))
    );
    assert_eq!(
        table.backends("empty"),
        Err(Refusal::Unavailable(
            "empty has no RUNNING instance: no instances".into()
        ))
    );
    assert_eq!(table.backends("nope"), Err(Refusal::Unknown("nope".into())));
}

#[test]
fn requests_go_to_the_instance_with_the_fewest_outstanding() {
    let table = Table::from_snapshot(&snapshot(vec![
        instance("a", "web", Status::Running, http(1), "", 1),
        instance("b", "web", Status::Running, http(2), "", 1),
        instance("c", "web", Status::Running, http(3), "", 1),
    ]));
    let backends = table.backends("web").expect("routable");
    let outstanding = Arc::new(Outstanding::default());
    let pick = |o: &Arc<Outstanding>| o.choose(backends).expect("a backend");
    let (first, held_a) = pick(&outstanding);
    let (second, held_b) = pick(&outstanding);
    let (third, _held_c) = pick(&outstanding);
    assert_eq!(
        [first.instance.0, second.instance.0, third.instance.0],
        ["a", "b", "c"]
    );
    // b finishes: it now has the fewest.
    drop(held_b);
    let (next, _held) = pick(&outstanding);
    assert_eq!(next.instance.0, "b");
    assert_eq!(outstanding.of(&InstanceId("b".into())), 1);
    drop(held_a);
    assert_eq!(outstanding.of(&InstanceId("a".into())), 0);
    assert!(outstanding.choose(&[]).is_none());
}

#[test]
fn the_pin_table_keeps_its_cap_and_forgets_the_least_recently_used() {
    let pins = Pins::new(2);
    let pin = |i: &str| Pin {
        server: "web".into(),
        instance: InstanceId(i.into()),
    };
    pins.pin("s1", pin("a"));
    pins.pin("s2", pin("b"));
    // s1 is used again, so s2 is now the oldest.
    assert_eq!(pins.get("s1"), Some(pin("a")));
    pins.pin("s3", pin("c"));
    assert_eq!(pins.len(), 2);
    assert_eq!(pins.get("s2"), None);
    assert_eq!(pins.get("s1"), Some(pin("a")));
    assert_eq!(pins.get("s3"), Some(pin("c")));
    pins.forget("s1");
    assert_eq!(pins.get("s1"), None);
    assert_eq!(pins.len(), 1);
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.insert(*name, HeaderValue::from_str(value).expect("header value"));
    }
    h
}

#[test]
fn with_a_token_every_request_needs_it() {
    let access = Access::new(Some("s3cret"), "127.0.0.1:9470".parse().expect("addr"));
    assert_eq!(access.check(&headers(&[])), Err(Denial::Unauthorized));
    assert_eq!(
        access.check(&headers(&[("authorization", "Bearer wrong")])),
        Err(Denial::Unauthorized)
    );
    assert_eq!(
        access.check(&headers(&[("authorization", "Basic s3cret")])),
        Err(Denial::Unauthorized)
    );
    assert_eq!(
        access.check(&headers(&[("authorization", "Bearer s3cret")])),
        Ok(())
    );
    let open = Access::new(None, "127.0.0.1:9470".parse().expect("addr"));
    assert_eq!(open.check(&headers(&[])), Ok(()));
}

#[test]
fn only_loopback_origins_and_the_gateways_own_address_are_accepted() {
    let access = Access::new(None, "10.0.0.5:9470".parse().expect("addr"));
    for ok in [
        "http://localhost:3000",
        "http://127.0.0.1:6274",
        "https://127.0.0.1",
        "http://[::1]:8080",
        "http://10.0.0.5:9470",
    ] {
        assert_eq!(access.check(&headers(&[("origin", ok)])), Ok(()), "{ok}");
    }
    for bad in [
        "http://evil.example",
        "http://evil.example:9470",
        "null",
        "http://10.0.0.5:9471",
        "file:///etc",
        "http://localhost.evil.example",
    ] {
        assert_eq!(
            access.check(&headers(&[("origin", bad)])),
            Err(Denial::Forbidden),
            "{bad}"
        );
    }
    // Listening on every address, no origin but loopback is the gateway's own.
    let any = Access::new(None, "0.0.0.0:9470".parse().expect("addr"));
    assert_eq!(
        any.check(&headers(&[("origin", "http://0.0.0.0:9470")])),
        Err(Denial::Forbidden)
    );
}

#[test]
fn a_non_loopback_listener_needs_a_token() {
    assert!(check_listen("127.0.0.1:9470".parse().expect("addr"), false).is_ok());
    assert!(check_listen("[::1]:9470".parse().expect("addr"), false).is_ok());
    assert!(check_listen("0.0.0.0:9470".parse().expect("addr"), false).is_err());
    assert!(check_listen("0.0.0.0:9470".parse().expect("addr"), true).is_ok());
}

#[test]
fn servers_are_served_at_their_mcp_path_only() {
    assert_eq!(server_of("/servers/github/mcp"), Some("github"));
    assert_eq!(server_of("/servers//mcp"), None);
    assert_eq!(server_of("/servers/a/b/mcp"), None);
    assert_eq!(server_of("/servers/github"), None);
    assert_eq!(server_of("/mcp"), None);
}
