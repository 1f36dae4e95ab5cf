//! Saved plans (`plan --out`). Besides the plan, a saved plan records what it
//! was made from: the source revision, the snapshot serial and a fingerprint
//! of the observation. `apply PLANFILE` compares all three, so a plan is
//! refused when the world changed after it was made, not only the state.
//!
//! It then compares the actions themselves ([`differences`]): time is an
//! input too, and a back-off or readiness deadline that passed since `plan`
//! changes what a fresh plan would do. Once accepted, the saved actions and
//! nothing else are carried out ([`Allowed`]): later passes only wait,
//! change statuses, and carry on the rolling replaces the plan listed.

use super::{Action, ActionKind, PlanJson};
use crate::model::{InstanceId, SpecHash};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// Changes only on purpose; `apply` refuses versions it does not know.
    pub saved_format: String,
    /// The source paths, so `apply PLANFILE` reads the same files again
    /// (empty for a git source).
    pub paths: Vec<std::path::PathBuf>,
    /// The git source, so `apply PLANFILE` fetches the same ref again; a
    /// plan file from before git sources has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<crate::source::GitSource>,
    /// The snapshot serial the plan was made against.
    pub state_serial: u64,
    /// [`Observation::fingerprint`](crate::model::Observation::fingerprint), or `None` for `--refresh=false`.
    pub observation: Option<String>,
    /// The spec hash of every desired server, which pins secrets as well as files.
    pub desired: BTreeMap<String, SpecHash>,
    pub plan: PlanJson,
}

impl SavedPlan {
    pub const FORMAT: &'static str = "1";
}

/// What identifies an action for comparison: reasons and waiting texts carry
/// times ("back-off 9s") that move on without meaning anything changed.
fn key(a: &Action) -> (ActionKind, &str, Option<&InstanceId>, bool) {
    (
        a.kind,
        a.server.as_str(),
        a.instance.as_ref(),
        a.waiting.is_none(),
    )
}

fn describe(a: &Action) -> String {
    let inst = a
        .instance
        .as_ref()
        .map_or_else(|| "(new)".to_owned(), |i| i.to_string());
    let waits = if a.waiting.is_some() { ", waiting" } else { "" };
    format!("{} {} {inst}{waits}", a.kind.as_str(), a.server)
}

/// How a fresh plan's actions differ from the saved ones, one line each
/// (`+` only in the fresh plan, `-` only in the saved one); empty when the
/// same actions would run.
pub fn differences(saved: &[Action], fresh: &[Action]) -> Vec<String> {
    let mut left: BTreeMap<_, usize> = BTreeMap::new();
    for a in saved {
        *left.entry(key(a)).or_default() += 1;
    }
    let mut out = Vec::new();
    for a in fresh {
        match left.get_mut(&key(a)) {
            Some(n) if *n > 0 => *n -= 1,
            _ => out.push(format!("+ {}", describe(a))),
        }
    }
    for a in saved {
        if let Some(n) = left.get_mut(&key(a))
            && *n > 0
        {
            *n -= 1;
            out.push(format!("- {}", describe(a)));
        }
    }
    out
}

/// The actions a saved plan permits. Status changes (promote, demote, fail)
/// are always permitted: they only record what the world did. A start,
/// removal, replace or adoption is permitted once, if the plan listed it;
/// the removal that finishes a listed replace ("replaced by ...") is
/// permitted with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    starts: BTreeMap<String, usize>,
    listed: BTreeSet<(ActionKind, InstanceId)>,
    used: BTreeSet<(ActionKind, InstanceId)>,
}

impl Allowed {
    pub fn new(actions: &[Action]) -> Allowed {
        let mut allowed = Allowed::default();
        for a in actions {
            match (&a.instance, a.kind) {
                (None, ActionKind::Start) => {
                    *allowed.starts.entry(a.server.clone()).or_default() += 1
                }
                (Some(id), kind) => {
                    allowed.listed.insert((kind, id.clone()));
                }
                (None, _) => {}
            }
        }
        allowed
    }

    /// Whether `a` may run now; a permitted start, removal, replace or
    /// adoption is used up.
    pub fn take(&mut self, a: &Action) -> bool {
        use ActionKind::*;
        match (a.kind, &a.instance) {
            (Promote | Demote | Fail, _) => true,
            (Start, _) => match self.starts.get_mut(&a.server) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            },
            (Remove, Some(id))
                if a.reason.starts_with("replaced by ")
                    && self.listed.contains(&(Replace, id.clone())) =>
            {
                self.used.insert((Remove, id.clone()))
            }
            (kind, Some(id)) => {
                let k = (kind, id.clone());
                self.listed.contains(&k) && self.used.insert(k)
            }
            (_, None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: ActionKind, server: &str, instance: Option<&str>, reason: &str) -> Action {
        Action {
            kind,
            server: server.into(),
            instance: instance.map(|i| InstanceId(i.into())),
            reason: reason.into(),
            diff: None,
            waiting: None,
        }
    }

    #[test]
    fn differences_ignore_reasons_but_not_what_runs() {
        let saved = vec![
            action(ActionKind::Start, "a", None, "new server"),
            action(
                ActionKind::Remove,
                "b",
                Some("x"),
                "clean up failed instance",
            ),
        ];
        let mut later = saved.clone();
        later[1].reason = "clean up failed instance (after 10s)".into();
        assert!(differences(&saved, &later).is_empty());
        // A back-off ran out meanwhile: a start appears.
        later.push(action(
            ActionKind::Start,
            "b",
            None,
            "replace failed instance",
        ));
        assert_eq!(differences(&saved, &later), ["+ start b (new)"]);
        // A replace that could run now, but was waiting when planned.
        let mut waiting = action(ActionKind::Replace, "c", Some("y"), "spec changed");
        waiting.waiting = Some("queued".into());
        let running = action(ActionKind::Replace, "c", Some("y"), "spec changed");
        assert_eq!(
            differences(&[waiting], &[running]),
            ["+ replace c y", "- replace c y, waiting"]
        );
    }

    #[test]
    fn a_saved_plan_permits_its_own_actions_once_and_status_changes_always() {
        let mut allowed = Allowed::new(&[
            action(ActionKind::Start, "a", None, "new server"),
            action(ActionKind::Replace, "b", Some("old"), "spec changed"),
            action(
                ActionKind::Remove,
                "c",
                Some("gone"),
                "server c removed from source",
            ),
        ]);
        assert!(allowed.take(&action(ActionKind::Start, "a", None, "x")));
        assert!(
            !allowed.take(&action(ActionKind::Start, "a", None, "x")),
            "one start only"
        );
        assert!(!allowed.take(&action(ActionKind::Start, "b", None, "x")));
        assert!(allowed.take(&action(ActionKind::Replace, "b", Some("old"), "x")));
        assert!(
            allowed.take(&action(
                ActionKind::Remove,
                "b",
                Some("old"),
                "replaced by new"
            )),
            "finishing a listed replace"
        );
        assert!(!allowed.take(&action(
            ActionKind::Remove,
            "b",
            Some("other"),
            "scale down 2 -> 1"
        )));
        assert!(allowed.take(&action(ActionKind::Remove, "c", Some("gone"), "x")));
        assert!(
            !allowed.take(&action(ActionKind::Remove, "c", Some("gone"), "x")),
            "used up"
        );
        for kind in [ActionKind::Promote, ActionKind::Demote, ActionKind::Fail] {
            assert!(allowed.take(&action(kind, "z", Some("any"), "x")));
        }
        assert!(!allowed.take(&action(ActionKind::Adopt, "a", Some("u"), "x")));
    }
}
