//! Taking the scope's applier lease (see `apply::lease`) as the commands
//! need it: `apply` refuses at once a holder that is alive and waits out
//! one that stopped renewing; `watch` waits for any holder (see `watch.rs`).

use super::connect::Connected;
use crate::apply::lease::{Claim, Claimer, Keeper, Standing, this_process, ttl_from_env};
use crate::model::FleetId;
use std::time::Duration;

/// How often a contender looks again while it waits.
pub const POLL: Duration = Duration::from_secs(1);

/// A claimer for this process.
pub fn claimer(command: &str) -> Claimer {
    Claimer::new(this_process(command), ttl_from_env())
}

/// The lease for `apply`: taken when free; refused, naming the holder, when
/// a holder is alive; and when its holder stopped renewing it, taken over
/// once a whole time to live has passed with no renewal, saying so on
/// stderr meanwhile.
pub async fn take_for_apply(rt: &Connected, fleet: &FleetId) -> miette::Result<Keeper> {
    let mut claimer = claimer(&super::apply::command_line());
    let mut told = false;
    loop {
        match claimer.attempt(rt).await? {
            Claim::Held(version) => return Ok(Keeper::new(claimer, version)),
            Claim::Busy(busy) if busy.looks_alive || busy.renewed_while_watched => {
                return Err(miette::miette!(
                    help = "wait for it to finish, or stop it; `mcpctl get`, `describe`, `logs` and `plan` work meanwhile",
                    "another applier is acting on the {fleet} fleet: {busy}"
                ));
            }
            Claim::Busy(busy) => {
                if !told {
                    told = true;
                    super::write_stderr(&format!(
                        "The applier lease of the {fleet} fleet is held by {busy}; it is no longer renewed, so mcpctl takes it over in {}s unless its holder renews it.\n",
                        busy.takeover_in.as_secs()
                    ));
                }
                tokio::time::sleep(POLL.min(busy.takeover_in.max(Duration::from_millis(10)))).await;
            }
        }
    }
}

/// Runs `work` while `keeper` keeps the lease; fails as soon as the lease
/// is lost (another applier took it over after we could not renew it), so
/// that two appliers never act at once for long.
pub async fn holding<T>(
    rt: &Connected,
    keeper: &mut Keeper,
    work: impl std::future::Future<Output = miette::Result<T>>,
) -> miette::Result<T> {
    let mut standing = keeper.subscribe();
    let lost = async {
        match standing
            .wait_for(|s| matches!(s, Standing::Waiting(_)))
            .await
        {
            Ok(s) => match &*s {
                Standing::Waiting(why) => why.clone(),
                Standing::Held(_) => String::new(),
            },
            // The keeper is gone; so is the lease.
            Err(_) => "the lease keeper stopped".to_owned(),
        }
    };
    tokio::select! {
        r = work => r,
        why = lost => Err(miette::miette!(
            help = "nothing more was done; run again once the other applier is finished",
            "stopped: the applier lease was lost: {why}"
        )),
        never = keeper.keep(rt) => match never {},
    }
}
