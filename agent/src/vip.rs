//! The virtual IPs on this host: the services' addresses the proxies listen on, added to the
//! loopback interface, where containers on any bridge network reach them through their gateway
//! (the host takes packets for any of its addresses). This takes CAP_NET_ADMIN and `ip`
//! (iproute2, or busybox's).
//!
//! Every change of the addresses goes through one lock, in order. The proxies' listeners say
//! which addresses they want; a periodic pass adds any that went missing and removes the ones
//! this agent added that no listener wants any more. Several agents of one cluster on one host
//! (as in the tests) want the same addresses and share them: an agent removes only what it
//! added, except after a complete table, when it also removes the addresses of the cluster's
//! pool that no listener wants (left by an earlier run).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// How often the addresses are checked against what the listeners want.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Vips {
    /// Serialises every `ip` command.
    ops: tokio::sync::Mutex<()>,
    /// The addresses the listeners use now.
    wanted: Mutex<HashSet<String>>,
    /// The addresses this agent added (or found it needed).
    claimed: Mutex<HashSet<String>>,
    /// The cluster's pool, as sent with the table: first and last address.
    pool: Mutex<Option<(u32, u32)>>,
    /// Whether the periodic pass runs.
    started: AtomicBool,
    /// Whether the "cannot add" error was logged (once; then at debug level).
    failure_logged: AtomicBool,
}

impl Vips {
    /// The addresses the listeners use now, and the cluster's pool (`None`: unknown); after a
    /// `complete` table, stale addresses of the pool go too. Starts the periodic pass.
    pub fn want(self: &Arc<Self>, wanted: HashSet<String>, pool: Option<(u32, u32)>, complete: bool) {
        let same = {
            let mut current = self.wanted.lock();
            let same = *current == wanted;
            *current = wanted;
            same
        };
        if pool.is_some() {
            *self.pool.lock() = pool;
        }
        // Most updates change backends only: no `ip` command for them.
        if !same || complete {
            let vips = self.clone();
            tokio::spawn(async move { vips.reconcile(complete).await });
        }
        if !self.started.swap(true, Ordering::SeqCst) {
            let vips = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RECONCILE_EVERY).await;
                    let Some(vips) = vips.upgrade() else { return };
                    vips.reconcile(false).await;
                }
            });
        }
    }

    /// Whether a listener used a virtual IP at the last update.
    pub fn wants_any(&self) -> bool {
        !self.wanted.lock().is_empty()
    }

    /// Adds `vip` to the loopback interface unless it is there.
    pub async fn claim(&self, vip: &str) -> Result<(), String> {
        let _one_at_a_time = self.ops.lock().await;
        if present().await.contains(vip) {
            return Ok(());
        }
        let result = add(vip).await;
        if result.is_ok() {
            self.claimed.lock().insert(vip.to_string());
        }
        match &result {
            Err(e) if !self.failure_logged.swap(true, Ordering::Relaxed) => {
                tracing::error!(vip, error = %e, "cannot add a virtual IP to this host's loopback interface (the agent needs CAP_NET_ADMIN and `ip`); services on networks are not reachable by name through this node until it can")
            }
            Err(e) => tracing::debug!(vip, error = %e, "cannot add a virtual IP"),
            Ok(()) => {}
        }
        result
    }

    /// Adds the wanted addresses that are missing and removes those no listener wants that this
    /// agent added (after a complete table: any of the pool's).
    async fn reconcile(&self, complete: bool) {
        let _one_at_a_time = self.ops.lock().await;
        let present = present().await;
        let wanted = self.wanted.lock().clone();
        let pool = *self.pool.lock();
        for vip in wanted.difference(&present) {
            match add(vip).await {
                Ok(()) => {
                    self.claimed.lock().insert(vip.clone());
                }
                Err(e) => tracing::debug!(vip, error = %e, "cannot add a virtual IP"),
            }
        }
        let in_pool = |vip: &str| {
            let (Some((first, last)), Ok(ip)) = (pool, vip.parse::<std::net::Ipv4Addr>()) else { return false };
            (first..=last).contains(&u32::from(ip))
        };
        for vip in present.difference(&wanted) {
            let ours = self.claimed.lock().contains(vip);
            if ours || (complete && in_pool(vip)) {
                tracing::info!(vip, "virtual IP no longer used here; removed from the loopback interface");
                remove(vip).await;
                self.claimed.lock().remove(vip);
            }
        }
    }
}

/// The IPv4 addresses on the loopback interface, outside 127.0.0.0/8.
async fn present() -> HashSet<String> {
    let shown = tokio::process::Command::new("ip")
        .args(["-o", "-4", "address", "show", "dev", "lo"])
        .kill_on_drop(true)
        .output()
        .await;
    let Ok(shown) = shown else { return HashSet::new() };
    String::from_utf8_lossy(&shown.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|cidr| cidr.split('/').next())
        .filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .map(str::to_string)
        .collect()
}

async fn add(vip: &str) -> Result<(), String> {
    let output = tokio::process::Command::new("ip")
        .args(["address", "add", &format!("{vip}/32"), "dev", "lo"])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running `ip address add`: {e}"))?;
    // Refused because another agent of this host added it meanwhile: no failure.
    if output.status.success() || present().await.contains(vip) {
        Ok(())
    } else {
        Err(format!("`ip address add {vip}/32 dev lo`: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

async fn remove(vip: &str) {
    let removed = tokio::process::Command::new("ip")
        .args(["address", "del", &format!("{vip}/32"), "dev", "lo"])
        .kill_on_drop(true)
        .output()
        .await;
    if let Ok(output) = removed
        && !output.status.success()
    {
        tracing::debug!(vip, error = %String::from_utf8_lossy(&output.stderr).trim(), "virtual IP not removed");
    }
}
