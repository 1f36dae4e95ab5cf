//! The refresh step as the CLI runs it: connect, then observe.

use super::Global;
use crate::plan::Desired;
use crate::runtime::{AnyRuntime, Observation};
use crate::state::Snapshot;

pub async fn observe(
    global: &Global,
    snapshot: &Snapshot,
    desired: &[Desired],
) -> miette::Result<(AnyRuntime, Observation)> {
    let rt = super::connect::runtime(global).await?;
    let obs = crate::runtime::refresh(&rt, snapshot, desired, false).await?;
    Ok((rt, obs))
}
