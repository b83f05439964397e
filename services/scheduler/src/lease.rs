//! The lease row in the registry: one scheduler at a time runs retrains on
//! a registry. A lease has a holder (`host:pid:nonce`) and an expiry; it is
//! renewed while a stage runs ([`LeaseKeeper`]) and every stage commit
//! checks it in the same transaction, so a scheduler whose lease was taken
//! over commits nothing. A lease expires on its own, or at once when its
//! holder's process is gone from this host (a killed scheduler does not
//! block its restart).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::SchedulerError;

/// The name of the retrain lease (one row per name).
pub const RETRAIN_LEASE: &str = "retrain";

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}

/// A fresh holder id for this process: `host:pid:nonce`.
pub fn new_holder() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}:{}:{nanos:08x}", hostname(), std::process::id())
}

/// Whether `holder` is a process of this host that no longer exists.
fn holder_is_gone(holder: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == hostname() && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// The current holder and expiry of `name`, if anyone holds it.
pub fn current(conn: &Connection, name: &str) -> Result<Option<(String, i64)>, SchedulerError> {
    Ok(conn
        .query_row(
            "SELECT holder, expires_at FROM lease WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Takes the lease `name` for `ttl_secs` from `now`: free, expired, already
/// ours, or held by a process of this host that is gone. Otherwise
/// [`SchedulerError::LeaseHeld`].
pub fn acquire(
    conn: &mut Connection,
    name: &str,
    holder: &str,
    ttl_secs: i64,
    now: i64,
) -> Result<(), SchedulerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some((h, expires_at)) = current(&tx, name)?
        && h != holder
        && expires_at > now
        && !holder_is_gone(&h)
    {
        return Err(SchedulerError::LeaseHeld {
            holder: h,
            expires_at,
        });
    }
    tx.execute(
        "INSERT INTO lease (name, holder, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET holder = ?2, acquired_at = ?3, expires_at = ?4",
        params![name, holder, now, now + ttl_secs],
    )?;
    tx.commit()?;
    Ok(())
}

/// Fails with [`SchedulerError::LeaseLost`] unless `holder` holds `name`;
/// called inside every stage commit's transaction.
pub fn check(conn: &Connection, name: &str, holder: &str) -> Result<(), SchedulerError> {
    match current(conn, name)? {
        Some((h, _)) if h == holder => Ok(()),
        Some((h, _)) => Err(SchedulerError::LeaseLost { holder: h }),
        None => Err(SchedulerError::LeaseLost {
            holder: "nobody".into(),
        }),
    }
}

/// Extends `holder`'s lease to `now + ttl_secs`; [`SchedulerError::LeaseLost`]
/// if someone else holds it now.
pub fn renew(
    conn: &Connection,
    name: &str,
    holder: &str,
    ttl_secs: i64,
    now: i64,
) -> Result<(), SchedulerError> {
    let n = conn.execute(
        "UPDATE lease SET expires_at = ?3 WHERE name = ?1 AND holder = ?2",
        params![name, holder, now + ttl_secs],
    )?;
    if n == 0 {
        return check(conn, name, holder);
    }
    Ok(())
}

/// Gives the lease back (nothing if `holder` no longer holds it).
pub fn release(conn: &Connection, name: &str, holder: &str) -> Result<(), SchedulerError> {
    conn.execute(
        "DELETE FROM lease WHERE name = ?1 AND holder = ?2",
        params![name, holder],
    )?;
    Ok(())
}

/// Renews a lease from a background thread every third of its TTL while a
/// long stage (pretraining, fine-tuning) runs; stops when dropped.
pub struct LeaseKeeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    lost: Arc<AtomicBool>,
    /// Who took the lease over, once a renewal found it taken.
    taken_by: tokio::sync::watch::Receiver<Option<String>>,
}

impl LeaseKeeper {
    /// Starts renewing `holder`'s lease in the registry at `path`.
    pub fn start(path: PathBuf, holder: String, ttl_secs: i64) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let (taken, taken_by) = tokio::sync::watch::channel(None);
        let every = Duration::from_secs((ttl_secs / 3).max(1) as u64);
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                let result = crate::db::connect(&path)
                    .and_then(|c| renew(&c, RETRAIN_LEASE, &holder, ttl_secs, unix_now()));
                match result {
                    Ok(()) => {}
                    Err(SchedulerError::LeaseLost { holder: other }) => {
                        tracing::error!(%other, "the registry lease was taken over: stopping the stage");
                        flag.store(true, Ordering::SeqCst);
                        let _ = taken.send(Some(other));
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "renewing the registry lease failed"),
                }
            }
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
            lost,
            taken_by,
        }
    }

    /// Whether a renewal found the lease taken over.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The flag set once the lease is found taken over (shared: hand it to
    /// work that checks it, as fine-tuning's cancel flag).
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// Who took the lease over, once it was.
    pub fn lost_to(&self) -> Option<String> {
        self.taken_by.borrow().clone()
    }

    /// Completes with [`SchedulerError::LeaseLost`] once a renewal finds
    /// the lease taken over (never while it is held): race a stage against
    /// it, so a scheduler that lost its lease stops working on the run.
    pub fn lost_signal(&self) -> impl std::future::Future<Output = SchedulerError> + use<> {
        let mut rx = self.taken_by.clone();
        async move {
            loop {
                if let Some(holder) = rx.borrow_and_update().clone() {
                    return SchedulerError::LeaseLost { holder };
                }
                if rx.changed().await.is_err() {
                    // The keeper stopped with the lease held: never lost.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::connect(&dir.path().join("r.sqlite")).unwrap();
        (dir, conn)
    }

    #[test]
    fn one_holder_at_a_time_until_expiry() {
        let (_d, mut c) = db();
        let (a, b) = ("h:1:a", "h:1:b");
        acquire(&mut c, RETRAIN_LEASE, a, 60, 1000).unwrap();
        // Ours again: renewed, not refused.
        acquire(&mut c, RETRAIN_LEASE, a, 60, 1010).unwrap();
        match acquire(&mut c, RETRAIN_LEASE, b, 60, 1020) {
            Err(SchedulerError::LeaseHeld { holder, expires_at }) => {
                assert_eq!(holder, a);
                assert_eq!(expires_at, 1070);
            }
            other => panic!("expected LeaseHeld, got {other:?}"),
        }
        check(&c, RETRAIN_LEASE, a).unwrap();
        assert!(matches!(
            check(&c, RETRAIN_LEASE, b),
            Err(SchedulerError::LeaseLost { .. })
        ));
        // Renewed to 1090: still held at 1080.
        renew(&c, RETRAIN_LEASE, a, 60, 1030).unwrap();
        assert!(acquire(&mut c, RETRAIN_LEASE, b, 60, 1080).is_err());
        // Expired: b takes it, and a's renewal and commit check now fail.
        acquire(&mut c, RETRAIN_LEASE, b, 60, 1090).unwrap();
        assert!(matches!(
            renew(&c, RETRAIN_LEASE, a, 60, 1091),
            Err(SchedulerError::LeaseLost { holder }) if holder == b
        ));
        assert!(check(&c, RETRAIN_LEASE, a).is_err());
        // a's release does not free b's lease; b's does.
        release(&c, RETRAIN_LEASE, a).unwrap();
        check(&c, RETRAIN_LEASE, b).unwrap();
        release(&c, RETRAIN_LEASE, b).unwrap();
        assert!(current(&c, RETRAIN_LEASE).unwrap().is_none());
        acquire(&mut c, RETRAIN_LEASE, a, 60, 1100).unwrap();
    }

    #[test]
    fn a_dead_process_of_this_host_loses_its_lease_at_once() {
        let (_d, mut c) = db();
        // A child that has exited: its pid is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = format!("{}:{pid}:00000000", hostname());
        acquire(&mut c, RETRAIN_LEASE, &dead, 3600, 1000).unwrap();
        let me = new_holder();
        acquire(&mut c, RETRAIN_LEASE, &me, 60, 1001).unwrap();
        assert_eq!(current(&c, RETRAIN_LEASE).unwrap().unwrap().0, me);
        // A live process (this one, another holder id) keeps its lease;
        // so does one on another host, whose pids we cannot see.
        let live_other = format!("{}:{}:ffffffff", hostname(), std::process::id());
        assert!(acquire(&mut c, RETRAIN_LEASE, &live_other, 60, 1002).is_err());
        release(&c, RETRAIN_LEASE, &me).unwrap();
        acquire(&mut c, RETRAIN_LEASE, "elsewhere:1:0", 60, 1003).unwrap();
        assert!(acquire(&mut c, RETRAIN_LEASE, &me, 60, 1004).is_err());
    }

    #[test]
    fn the_keeper_renews_while_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        let mut c = crate::db::connect(&path).unwrap();
        let me = new_holder();
        acquire(&mut c, RETRAIN_LEASE, &me, 3, unix_now() - 100).unwrap();
        let before = current(&c, RETRAIN_LEASE).unwrap().unwrap().1;
        let keeper = LeaseKeeper::start(path.clone(), me.clone(), 3);
        // Wait (without a timed assertion) until a renewal moved the expiry.
        while current(&c, RETRAIN_LEASE).unwrap().unwrap().1 == before {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!keeper.lost());
        drop(keeper);
        assert!(current(&c, RETRAIN_LEASE).unwrap().unwrap().1 > before);
    }
}
