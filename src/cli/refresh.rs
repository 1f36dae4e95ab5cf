//! The refresh step as the CLI runs it: connect, then observe and probe.

use super::Global;
use super::connect::Connected;
use crate::apply::ProbeHeaders;
use crate::model::{Observation, Snapshot};
use crate::plan::Desired;

pub async fn observe(
    global: &Global,
    snapshot: &Snapshot,
    desired: &[Desired],
    headers: &ProbeHeaders,
) -> miette::Result<(Connected, Observation)> {
    let rt = super::connect::runtime(global).await?;
    let obs = crate::apply::refresh(&rt, snapshot, desired, headers, false).await?;
    Ok((rt, obs))
}
