//! Saved plans (`plan --out`). Besides the plan, a saved plan records what it
//! was made from: the source revision, the snapshot serial and a fingerprint
//! of the observation. `apply PLANFILE` compares all three, so a plan is
//! refused when the world changed after it was made, not only the state.

use super::PlanJson;
use crate::model::SpecHash;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// Changes only on purpose; `apply` refuses versions it does not know.
    pub saved_format: String,
    /// The source paths, so `apply PLANFILE` reads the same files again.
    pub paths: Vec<std::path::PathBuf>,
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
