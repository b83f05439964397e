//! Rendezvous like torchrun: `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, and
//! `RANK` from the environment, or the rank taken from the store's counter
//! so that identical replicas (compose `--scale trainer=N`) work.

use std::net::{TcpListener, ToSocketAddrs};

use crate::error::DistError;
use crate::group::{DEFAULT_PREFIX, GroupOptions, ProcessGroup, STORE_HOST_KEY};
use crate::store::Store;

/// Store counter that hands out ranks when `RANK` is not set.
pub const RANK_COUNTER_KEY: &str = "pretext/rank";

/// Where the ranks meet and who this one is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    /// Host of the TCP store (`MASTER_ADDR`).
    pub master_addr: String,
    /// Its port (`MASTER_PORT`).
    pub master_port: u16,
    /// Number of ranks (`WORLD_SIZE`).
    pub world_size: usize,
    /// This rank (`RANK`); `None` takes one from the store's counter, and
    /// the process that can host the store on `master_addr` hosts it.
    pub rank: Option<usize>,
}

impl Rendezvous {
    /// The rendezvous in the environment; `None` when `WORLD_SIZE` is unset
    /// (a single process). `MASTER_ADDR` defaults to `127.0.0.1`,
    /// `MASTER_PORT` to 29500 (as torchrun).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] over any variable lookup (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let Some(world) = var("WORLD_SIZE").filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let world_size: usize = parse("WORLD_SIZE", &world)?;
        if world_size == 0 {
            return Err(DistError::Env {
                var: "WORLD_SIZE",
                reason: "must be at least 1".into(),
            });
        }
        let rank = match var("RANK").filter(|s| !s.trim().is_empty()) {
            Some(r) => {
                let r: usize = parse("RANK", &r)?;
                if r >= world_size {
                    return Err(DistError::Env {
                        var: "RANK",
                        reason: format!("{r} is not below WORLD_SIZE {world_size}"),
                    });
                }
                Some(r)
            }
            None => None,
        };
        let master_port = match var("MASTER_PORT").filter(|s| !s.trim().is_empty()) {
            Some(p) => parse("MASTER_PORT", &p)?,
            None => 29500,
        };
        if master_port == 0 {
            return Err(DistError::Env {
                var: "MASTER_PORT",
                reason: "must not be 0".into(),
            });
        }
        let master_addr = var("MASTER_ADDR")
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        Ok(Some(Self {
            master_addr,
            master_port,
            world_size,
            rank,
        }))
    }
}

fn parse<T: std::str::FromStr>(var: &'static str, s: &str) -> Result<T, DistError>
where
    T::Err: std::fmt::Display,
{
    s.trim().parse().map_err(|e: T::Err| DistError::Env {
        var,
        reason: format!("`{s}`: {e}"),
    })
}

/// Meets the other ranks and builds the process group: rank 0 (or, without
/// `RANK`, whichever process on `master_addr`'s host binds the port first)
/// hosts the store; every rank then joins the backend, waiting up to
/// `options.timeout` for the others.
pub fn init(rdv: &Rendezvous, options: GroupOptions) -> Result<ProcessGroup, DistError> {
    let timeout = options.timeout;
    let host = rdv.master_addr.as_str();
    let store = match rdv.rank {
        Some(0) => Store::connect(host, rdv.master_port, true, timeout)?,
        Some(_) => Store::connect(host, rdv.master_port, false, timeout)?,
        None if is_local(host) => match Store::connect(host, rdv.master_port, true, timeout) {
            Ok(store) => store,
            Err(err) => {
                tracing::debug!(error = %err, "another replica hosts the store; joining it");
                Store::connect(host, rdv.master_port, false, timeout)?
            }
        },
        None => Store::connect(host, rdv.master_port, false, timeout)?,
    };
    let rank = match rdv.rank {
        Some(r) => r,
        None => {
            let n = store.add(RANK_COUNTER_KEY, 1)?;
            let r = usize::try_from(n - 1).unwrap_or(usize::MAX);
            if r >= rdv.world_size {
                return Err(DistError::Init {
                    rank: None,
                    world: rdv.world_size,
                    message: format!(
                        "replica {n} joined a world of {}: every rank is taken",
                        rdv.world_size
                    ),
                });
            }
            r
        }
    };
    if store.is_server() {
        store.set(
            &format!("{DEFAULT_PREFIX}/{STORE_HOST_KEY}"),
            rank.to_string().as_bytes(),
        )?;
    }
    tracing::info!(
        rank,
        world = rdv.world_size,
        store = %store.addr(),
        hosts_store = store.is_server(),
        "joining the process group"
    );
    ProcessGroup::new(store, rank, rdv.world_size, options)
}

/// Whether `host` resolves to an address of this machine (one we can bind).
pub(crate) fn is_local(host: &str) -> bool {
    let Ok(addrs) = (host, 0u16).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpListener::bind((a.ip(), 0)).is_ok())
}

/// A TCP port that was free a moment ago on 127.0.0.1 (for launching local
/// ranks; another process may take it before the store binds it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rdv(vars: &[(&str, &str)]) -> Result<Option<Rendezvous>, DistError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Rendezvous::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn reads_torchrun_variables() {
        assert_eq!(rdv(&[]).unwrap(), None);
        assert_eq!(
            rdv(&[
                ("WORLD_SIZE", "4"),
                ("RANK", "3"),
                ("MASTER_ADDR", "trainer-0"),
                ("MASTER_PORT", "1234")
            ])
            .unwrap(),
            Some(Rendezvous {
                master_addr: "trainer-0".into(),
                master_port: 1234,
                world_size: 4,
                rank: Some(3)
            })
        );
        let replica = rdv(&[("WORLD_SIZE", "2")]).unwrap().unwrap();
        assert_eq!(replica.rank, None);
        assert_eq!(replica.master_addr, "127.0.0.1");
        assert_eq!(replica.master_port, 29500);
    }

    #[test]
    fn rejects_bad_variables() {
        for (vars, var) in [
            (vec![("WORLD_SIZE", "0")], "WORLD_SIZE"),
            (vec![("WORLD_SIZE", "x")], "WORLD_SIZE"),
            (vec![("WORLD_SIZE", "2"), ("RANK", "2")], "RANK"),
            (
                vec![("WORLD_SIZE", "2"), ("MASTER_PORT", "70000")],
                "MASTER_PORT",
            ),
        ] {
            match rdv(&vars) {
                Err(DistError::Env { var: v, .. }) => assert_eq!(v, var),
                other => panic!("{vars:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn loopback_and_local_hosts() {
        assert!(crate::group::is_loopback("127.0.0.1"));
        assert!(crate::group::is_loopback("localhost"));
        assert!(!crate::group::is_loopback("10.0.0.1"));
        assert!(is_local("127.0.0.1"));
        assert!(!is_local("192.0.2.1"), "TEST-NET-1 is nobody's address");
    }
}
