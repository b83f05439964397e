//! Elastic membership, torchrun's `--nnodes MIN:MAX --rdzv-endpoint`:
//! processes join and leave a running group, and every change forms a new
//! *generation*, a fresh process group with store keys of its own, over
//! the one store that the process binding the endpoint hosts.
//!
//! # Protocol (in the store, under `pretext/elastic/`)
//! - `member` hands out member ids (oldest first); `name/{id}` says who a
//!   member is; its heartbeat thread bumps `hb/{id}` every [`HEARTBEAT`];
//!   `left/{id}` is set when it leaves for good.
//! - `latest` is the newest closed generation (0: none yet). A member that
//!   wants a group registers for generation `latest + 1`: `g/{n}/n` counts
//!   the registrations, `g/{n}/slot/{k}` holds the k-th one's id.
//! - The first registrant *closes* the generation once at least MIN live
//!   members are registered and every member of the generation before has
//!   registered, left, or gone silent for [`DEAD_AFTER`] (and no one has
//!   registered for [`SETTLE`]), or as soon as MAX are. It writes
//!   `g/{n}/members` (the lowest ids, at most MAX; rank = place in that
//!   list) and bumps `latest`. `g/{n}/lock` makes the close happen once: a
//!   waiter that finds the closer silent closes the generation empty, and
//!   everyone registers for the next one.
//! - A running generation sees a registration for the next one
//!   ([`Elastic::waiting`]) and re-forms at a round boundary; a member that
//!   dies makes the group's collectives fail, and the survivors register.
//!
//! The process hosting the store must live as long as the run (as with
//! torchrun's c10d rendezvous backend): the store is where ranks meet.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::DistError;
use crate::group::{GroupOptions, ProcessGroup, STORE_HOST_KEY};
use crate::rendezvous::is_local;
use crate::store::Store;

/// How often a member bumps its heartbeat counter.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// A member whose heartbeat has not moved for this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(2);
/// How long the closer waits after the last registration, so that members
/// starting together land in one generation.
pub const SETTLE: Duration = Duration::from_millis(300);
/// Store key prefix of the elastic protocol.
const PREFIX: &str = "pretext/elastic";
/// How often waits poll the store.
const POLL: Duration = Duration::from_millis(25);
/// How often a long wait says what it waits for.
const REPORT: Duration = Duration::from_secs(10);

fn key(name: &str) -> String {
    format!("{PREFIX}/{name}")
}

/// Where the members meet and how many may train together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElasticOptions {
    /// Host of the store (`--rdzv-endpoint`'s host): the process that can
    /// bind it on this host hosts the store.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Fewest members that train; fewer wait.
    pub min: usize,
    /// Most members in a generation; more wait for a place.
    pub max: usize,
    /// How each generation's group is built (its timeout also bounds every
    /// store call).
    pub group: GroupOptions,
}

/// One member of a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its id (from the store's counter: lower joined earlier).
    pub id: u64,
    /// What it called itself (`host:pid`).
    pub name: String,
}

/// A generation this member is in: the group and who else is.
#[derive(Debug)]
pub struct Generation {
    /// Its number (1, 2, …).
    pub number: u64,
    /// The members, by rank.
    pub members: Vec<Member>,
    /// Members of the generation before that are not in this one and said
    /// they left.
    pub left: Vec<Member>,
    /// Members of the generation before that are not in this one and did
    /// not say so (killed, hung, cut off).
    pub lost: Vec<Member>,
    /// Members in this one that were not in the one before.
    pub joined: Vec<Member>,
    /// The process group of this generation.
    pub group: ProcessGroup,
}

/// This process's membership of an elastic run: its store connection
/// (hosting the store when it binds the endpoint) and its heartbeat.
#[derive(Debug)]
pub struct Elastic {
    store: Store,
    options: ElasticOptions,
    id: u64,
    name: String,
    /// The generation this member was last in (0: none).
    current: u64,
    beat_stop: Arc<AtomicBool>,
    beat: Option<JoinHandle<()>>,
}

/// How a member's heartbeat has been seen moving.
#[derive(Default)]
struct Beats {
    seen: HashMap<u64, (i64, Instant)>,
}

impl Beats {
    /// Whether `id`'s heartbeat moved within [`DEAD_AFTER`] of now (a
    /// member first seen now counts as alive until then).
    fn alive(&mut self, store: &Store, id: u64) -> Result<bool, DistError> {
        let value = store.add(&key(&format!("hb/{id}")), 0)?;
        let now = Instant::now();
        let entry = self.seen.entry(id).or_insert((value, now));
        if entry.0 != value {
            *entry = (value, now);
        }
        Ok(now.duration_since(entry.1) < DEAD_AFTER)
    }
}

impl Elastic {
    /// Connects to the store at the endpoint, hosting it when this host
    /// can bind it and no one has yet; takes a member id and starts the
    /// heartbeat. `name` says who this member is in logs and checkpoints.
    pub fn join(options: ElasticOptions, name: &str) -> Result<Self, DistError> {
        if options.min == 0 || options.max < options.min {
            return Err(DistError::Env {
                var: "nnodes",
                reason: format!(
                    "{}:{} is not MIN:MAX with 1 <= MIN <= MAX",
                    options.min, options.max
                ),
            });
        }
        let timeout = options.group.timeout;
        let (host, port) = (options.host.as_str(), options.port);
        let store = if is_local(host) {
            match Store::connect(host, port, true, timeout) {
                Ok(store) => store,
                Err(err) => {
                    tracing::debug!(error = %err, "another member hosts the store; joining it");
                    Store::connect(host, port, false, timeout)?
                }
            }
        } else {
            Store::connect(host, port, false, timeout)?
        };
        let id = u64::try_from(store.add(&key("member"), 1)?).unwrap_or(0);
        store.set(&key(&format!("name/{id}")), name.as_bytes())?;
        let beat_store = Store::connect(host, port, false, timeout)?;
        let beat_stop = Arc::new(AtomicBool::new(false));
        let stop = beat_stop.clone();
        let beat_key = key(&format!("hb/{id}"));
        let beat = std::thread::Builder::new()
            .name(format!("pretext-heartbeat-{id}"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(err) = beat_store.add(&beat_key, 1) {
                        tracing::warn!(error = %err, "heartbeat failed");
                    }
                    std::thread::sleep(HEARTBEAT);
                }
            })
            .map_err(|e| DistError::Init {
                rank: None,
                world: 0,
                message: format!("heartbeat thread: {e}"),
            })?;
        tracing::info!(
            member = id,
            name,
            store = %store.addr(),
            hosts_store = store.is_server(),
            min = options.min,
            max = options.max,
            "elastic: joined the run"
        );
        Ok(Self {
            store,
            options,
            id,
            name: name.to_owned(),
            current: 0,
            beat_stop,
            beat: Some(beat),
        })
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this process hosts the store.
    pub fn hosts_store(&self) -> bool {
        self.store.is_server()
    }

    /// The options it was joined with.
    pub fn options(&self) -> &ElasticOptions {
        &self.options
    }

    /// Members registered for the generation after the current one: a
    /// running group re-forms (at a round boundary) when there are some and
    /// it has room.
    pub fn waiting(&self) -> Result<u64, DistError> {
        registered(&self.store, self.current + 1)
    }

    /// A watch on registrations for the generation after the current one,
    /// over a connection of its own (for a trainer's round loop); it says
    /// a re-formation is wanted only while a generation of `world` members
    /// has room.
    pub fn watch(&self, world: usize) -> Result<JoinWatch, DistError> {
        Ok(JoinWatch {
            store: Store::connect(
                &self.options.host,
                self.options.port,
                false,
                self.options.group.timeout,
            )?,
            next: self.current + 1,
            room: world < self.options.max,
        })
    }

    /// Says, for good, that this member leaves: the next generation does
    /// not wait for it.
    pub fn leave(&self) -> Result<(), DistError> {
        self.store.set(&key(&format!("left/{}", self.id)), b"1")
    }

    /// Waits for the next generation this member is in and joins its
    /// group; `None` when `stop` turned true first (the member has then
    /// left). Waits as long as fewer than MIN members are present, saying
    /// so every few seconds.
    pub fn next_generation(
        &mut self,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Generation>, DistError> {
        loop {
            let n = u64::try_from(self.store.add(&key("latest"), 0)?).unwrap_or(0) + 1;
            let slot = self.store.add(&key(&format!("g/{n}/n")), 1)?;
            self.store.set(
                &key(&format!("g/{n}/slot/{slot}")),
                self.id.to_string().as_bytes(),
            )?;
            tracing::debug!(
                generation = n,
                slot,
                member = self.id,
                "elastic: registered"
            );
            let members = if slot == 1 {
                self.close(n, stop)?
            } else {
                self.await_close(n, stop)?
            };
            let Some(members) = members else {
                self.leave()?;
                return Ok(None);
            };
            if !members.contains(&self.id) {
                tracing::info!(
                    generation = n,
                    "elastic: not in this generation (full or late); waiting for the next"
                );
                continue;
            }
            return self.form(n, &members).map(Some);
        }
    }

    /// The ids of generation `n`'s members, once closed.
    fn members_of(&self, n: u64) -> Result<Option<Vec<u64>>, DistError> {
        let k = key(&format!("g/{n}/members"));
        if !self.store.check(&k)? {
            return Ok(None);
        }
        Ok(Some(parse_ids(&self.store.get(&k)?)))
    }

    fn has_left(&self, id: u64) -> Result<bool, DistError> {
        self.store.check(&key(&format!("left/{id}")))
    }

    /// Closes generation `n` with `members` (empty: abandoned), unless
    /// someone else closed it first; returns the members it closed with.
    fn seal(&self, n: u64, members: &[u64]) -> Result<Vec<u64>, DistError> {
        if self.store.add(&key(&format!("g/{n}/lock")), 1)? == 1 {
            let list = members
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            self.store
                .set(&key(&format!("g/{n}/members")), list.as_bytes())?;
            self.store.add(&key("latest"), 1)?;
            return Ok(members.to_vec());
        }
        Ok(parse_ids(&self.store.get(&key(&format!("g/{n}/members")))?))
    }

    /// The closer's side: waits for the members (see the module docs).
    fn close(&self, n: u64, stop: &dyn Fn() -> bool) -> Result<Option<Vec<u64>>, DistError> {
        let previous = match n {
            1 => Vec::new(),
            _ => self.members_of(n - 1)?.unwrap_or_default(),
        };
        let mut beats = Beats::default();
        let (mut last_count, mut changed) = (0, Instant::now());
        let mut reported = Instant::now();
        loop {
            if stop() {
                self.seal(n, &[])?;
                return Ok(None);
            }
            let count = self.store.add(&key(&format!("g/{n}/n")), 0)?;
            if count != last_count {
                (last_count, changed) = (count, Instant::now());
            }
            let mut live = Vec::new();
            for slot in 1..=count {
                // Set right after the count; a registrant that died between
                // the two never sets it.
                let slot_key = key(&format!("g/{n}/slot/{slot}"));
                if !self.store.check(&slot_key)? {
                    continue;
                }
                for id in parse_ids(&self.store.get(&slot_key)?) {
                    if id == self.id || (!self.has_left(id)? && beats.alive(&self.store, id)?) {
                        live.push(id);
                    }
                }
            }
            live.sort_unstable();
            live.dedup();
            let mut awaited = 0;
            for &id in &previous {
                if !live.contains(&id) && !self.has_left(id)? && beats.alive(&self.store, id)? {
                    awaited += 1;
                }
            }
            let (min, max) = (self.options.min, self.options.max);
            if live.len() >= max
                || (live.len() >= min && awaited == 0 && changed.elapsed() >= SETTLE)
            {
                live.truncate(max);
                return self.seal(n, &live).map(Some);
            }
            if reported.elapsed() >= REPORT {
                reported = Instant::now();
                tracing::info!(
                    generation = n,
                    present = live.len(),
                    min,
                    awaited,
                    "elastic: waiting for members"
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// A waiter's side: waits for the close, closing the generation empty
    /// if the closer goes silent.
    fn await_close(&self, n: u64, stop: &dyn Fn() -> bool) -> Result<Option<Vec<u64>>, DistError> {
        let closer = parse_ids(&self.store.get(&key(&format!("g/{n}/slot/1")))?)
            .first()
            .copied()
            .unwrap_or(0);
        let mut beats = Beats::default();
        let mut reported = Instant::now();
        loop {
            if stop() {
                return Ok(None);
            }
            if let Some(members) = self.members_of(n)? {
                return Ok(Some(members));
            }
            if self.has_left(closer)? || !beats.alive(&self.store, closer)? {
                tracing::info!(
                    generation = n,
                    closer,
                    "elastic: the member forming this generation is gone; starting over"
                );
                return self.seal(n, &[]).map(Some);
            }
            if reported.elapsed() >= REPORT {
                reported = Instant::now();
                tracing::info!(
                    generation = n,
                    closer,
                    "elastic: waiting for the generation to form"
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn member(&self, id: u64) -> Result<Member, DistError> {
        let name = self.store.get(&key(&format!("name/{id}")))?;
        Ok(Member {
            id,
            name: String::from_utf8_lossy(&name).into_owned(),
        })
    }

    /// Joins generation `n`'s group.
    fn form(&mut self, n: u64, ids: &[u64]) -> Result<Generation, DistError> {
        let rank = ids
            .iter()
            .position(|&id| id == self.id)
            .expect("a member of the generation");
        let previous = match n {
            1 => Vec::new(),
            _ => self.members_of(n - 1)?.unwrap_or_default(),
        };
        let members = ids
            .iter()
            .map(|&id| self.member(id))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut left, mut lost) = (Vec::new(), Vec::new());
        for &id in previous.iter().filter(|id| !ids.contains(id)) {
            let m = self.member(id)?;
            if self.has_left(id)? {
                left.push(m);
            } else {
                lost.push(m);
            }
        }
        let joined = members
            .iter()
            .filter(|m| !previous.contains(&m.id))
            .cloned()
            .collect();
        let prefix = key(&format!("g/{n}"));
        if self.store.is_server() {
            self.store.set(
                &format!("{prefix}/{STORE_HOST_KEY}"),
                rank.to_string().as_bytes(),
            )?;
        }
        let client = Store::connect(
            &self.options.host,
            self.options.port,
            false,
            self.options.group.timeout,
        )?;
        tracing::info!(
            generation = n,
            rank,
            world = ids.len(),
            member = self.id,
            "elastic: joining the generation's group"
        );
        let group = ProcessGroup::with_prefix(
            client,
            rank,
            ids.len(),
            self.options.group.clone(),
            &prefix,
        )?;
        self.current = n;
        Ok(Generation {
            number: n,
            members,
            left,
            lost,
            joined,
            group,
        })
    }
}

/// Registrations for generation `n` so far.
fn registered(store: &Store, n: u64) -> Result<u64, DistError> {
    let k = key(&format!("g/{n}/n"));
    if !store.check(&k)? {
        return Ok(0);
    }
    Ok(u64::try_from(store.add(&k, 0)?).unwrap_or(0))
}

/// Whether members wait to join, seen from a running generation.
#[derive(Debug)]
pub struct JoinWatch {
    store: Store,
    next: u64,
    room: bool,
}

impl JoinWatch {
    /// Whether the running generation should re-form: someone registered
    /// for the next one and there is room for them.
    pub fn wanted(&self) -> Result<bool, DistError> {
        Ok(self.room && registered(&self.store, self.next)? > 0)
    }
}

/// What this process calls itself as a member: `host:pid`.
pub fn process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

impl Drop for Elastic {
    fn drop(&mut self) {
        self.beat_stop.store(true, Ordering::Relaxed);
        if let Some(beat) = self.beat.take() {
            let _ = beat.join();
        }
    }
}

/// Comma-separated ids (bad entries skipped: the store is ours).
fn parse_ids(bytes: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(bytes)
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_skip_garbage() {
        assert_eq!(parse_ids(b"3,1,2"), vec![3, 1, 2]);
        assert_eq!(parse_ids(b""), Vec::<u64>::new());
        assert_eq!(parse_ids(b"4,x,5"), vec![4, 5]);
    }

    #[test]
    fn bad_ranges_are_refused() {
        for (min, max) in [(0, 2), (3, 2)] {
            let options = ElasticOptions {
                host: "127.0.0.1".into(),
                port: 1,
                min,
                max,
                group: GroupOptions::default(),
            };
            match Elastic::join(options, "t") {
                Err(DistError::Env { var, .. }) => assert_eq!(var, "nnodes"),
                other => panic!("{min}:{max}: {other:?}"),
            }
        }
    }
}
