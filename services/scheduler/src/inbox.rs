//! The inbox: a local directory, or any object store URL `object_store`
//! understands (`s3://…` and the like when their features are built in;
//! `file:///…` is the local directory). Listing yields the `*.parquet`
//! objects (names starting with `.` are skipped: write a file under such a
//! name and rename it when complete). Fetching copies an object into the
//! scheduler's own store as `<sha-256>.parquet`, hashing while it copies.
//!
//! A local inbox is walked without following symbolic links: a link is
//! never read (it could lead out of the inbox, to a secret), only reported.
//! An entry that cannot be listed or fetched is skipped with its reason;
//! the rest of the inbox is still registered.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};

use crate::error::SchedulerError;

/// One object of the inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxEntry {
    /// Its location inside the inbox.
    pub location: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (RFC 3339).
    pub modified: String,
}

/// An inbox entry left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Its location inside the inbox.
    pub location: String,
    /// Why it was not registered.
    pub reason: String,
}

/// What a listing found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The `*.parquet` files, sorted by location.
    pub entries: Vec<InboxEntry>,
    /// What was not listed: links, unreadable directories, odd names.
    pub skipped: Vec<Skipped>,
}

enum Backend {
    /// A local directory (canonical path), walked without following links.
    Local(PathBuf),
    /// An object store and the prefix inside it.
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: Option<ObjectPath>,
    },
}

/// An opened inbox.
pub struct Inbox {
    backend: Backend,
    name: String,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("name", &self.name).finish()
    }
}

/// Why a fetch failed (the entry is skipped, the tick goes on).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The entry is not a regular file inside the inbox.
    #[error("{0}")]
    Refused(String),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// Reading the entry failed.
    #[error("reading it: {0}")]
    Read(std::io::Error),
    /// The scheduler's own store could not be written.
    #[error(transparent)]
    Local(#[from] SchedulerError),
}

impl Inbox {
    /// A local directory (which must exist), or a URL with a scheme.
    pub fn open(spec: &str) -> Result<Self, SchedulerError> {
        let err = |source| SchedulerError::Inbox {
            inbox: spec.to_owned(),
            source,
        };
        let local = if spec.contains("://") {
            let url = url::Url::parse(spec)
                .map_err(|e| SchedulerError::Config(format!("inbox URL `{spec}`: {e}")))?;
            if url.scheme() != "file" {
                let (store, prefix) = object_store::parse_url(&url).map_err(err)?;
                return Ok(Self {
                    backend: Backend::Store {
                        store: Arc::from(store),
                        prefix: Some(prefix).filter(|p| !p.as_ref().is_empty()),
                    },
                    name: spec.to_owned(),
                });
            }
            url.to_file_path().map_err(|()| {
                SchedulerError::Config(format!("inbox URL `{spec}`: not a local path"))
            })?
        } else {
            PathBuf::from(spec)
        };
        let root = std::fs::canonicalize(&local)
            .ok()
            .filter(|d| d.is_dir())
            .ok_or_else(|| {
                SchedulerError::Config(format!("the inbox {spec} is not a directory"))
            })?;
        Ok(Self {
            backend: Backend::Local(root),
            name: spec.to_owned(),
        })
    }

    /// What the inbox is called in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `*.parquet` objects, sorted by location, and what was skipped.
    /// Fails only when the inbox itself cannot be listed.
    pub async fn list(&self) -> Result<Listing, SchedulerError> {
        let mut out = match &self.backend {
            Backend::Local(root) => {
                let root = root.clone();
                let name = self.name.clone();
                tokio::task::spawn_blocking(move || walk(&root))
                    .await
                    .map_err(|e| SchedulerError::Config(format!("listing {name}: {e}")))?
                    .map_err(SchedulerError::io("list", Path::new(&self.name)))?
            }
            Backend::Store { store, prefix } => {
                let mut stream = store.list(prefix.as_ref());
                let mut out = Listing::default();
                while let Some(meta) = stream.next().await {
                    let meta = match meta {
                        Ok(m) => m,
                        Err(e) => {
                            out.skipped.push(Skipped {
                                location: String::new(),
                                reason: format!("listing failed: {e}"),
                            });
                            continue;
                        }
                    };
                    let name = meta.location.filename().unwrap_or_default();
                    if name.starts_with('.') || !name.ends_with(".parquet") {
                        continue;
                    }
                    out.entries.push(InboxEntry {
                        location: meta.location.to_string(),
                        size: meta.size,
                        modified: meta.last_modified.to_rfc3339(),
                    });
                }
                out
            }
        };
        out.entries.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    /// Copies `entry` into `store_dir` as `<sha-256>.parquet` (written to a
    /// temporary name, synced, then renamed) and returns the hash and the
    /// copy. A content already stored is not written again. A local entry
    /// must still be a regular file inside the inbox, reached without links.
    pub async fn fetch(
        &self,
        entry: &InboxEntry,
        store_dir: &Path,
    ) -> Result<(String, PathBuf), FetchError> {
        std::fs::create_dir_all(store_dir).map_err(SchedulerError::io("create", store_dir))?;
        let tmp = store_dir.join(format!(".fetch-{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(SchedulerError::io("create", &tmp))?;
        let mut hasher = Sha256::new();
        let copied = match &self.backend {
            Backend::Local(root) => copy_local(root, &entry.location, &mut file, &mut hasher),
            Backend::Store { store, .. } => {
                copy_object(
                    store.as_ref(),
                    &entry.location,
                    &mut file,
                    &mut hasher,
                    &tmp,
                )
                .await
            }
        };
        if let Err(e) = copied {
            drop(file);
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        file.sync_all().map_err(SchedulerError::io("fsync", &tmp))?;
        drop(file);
        let hash: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let stored = store_dir.join(format!("{hash}.parquet"));
        if stored.exists() {
            std::fs::remove_file(&tmp).map_err(SchedulerError::io("remove", &tmp))?;
        } else {
            std::fs::rename(&tmp, &stored).map_err(SchedulerError::io("rename", &tmp))?;
        }
        Ok((hash, stored))
    }
}

/// Walks a local inbox without following links.
fn walk(root: &Path) -> std::io::Result<Listing> {
    let mut out = Listing::default();
    std::fs::read_dir(root)?; // the inbox itself must be listable
    let mut dirs = vec![PathBuf::new()];
    let skip = |out: &mut Listing, rel: &Path, reason: String| {
        out.skipped.push(Skipped {
            location: location_of(rel),
            reason,
        })
    };
    while let Some(rel) = dirs.pop() {
        let read = match std::fs::read_dir(root.join(&rel)) {
            Ok(r) => r,
            Err(e) => {
                skip(&mut out, &rel, format!("directory not listable: {e}"));
                continue;
            }
        };
        for dirent in read {
            let dirent = match dirent {
                Ok(d) => d,
                Err(e) => {
                    skip(&mut out, &rel, format!("directory not listable: {e}"));
                    continue;
                }
            };
            let path = rel.join(dirent.file_name());
            let Some(name) = dirent.file_name().to_str().map(str::to_owned) else {
                skip(&mut out, &path, "a name that is not UTF-8".into());
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            // The entry itself, never what a link points at.
            let meta = match dirent.metadata() {
                Ok(m) => m,
                Err(e) => {
                    skip(&mut out, &path, format!("not readable: {e}"));
                    continue;
                }
            };
            let kind = meta.file_type();
            if kind.is_symlink() {
                skip(
                    &mut out,
                    &path,
                    "a symbolic link: never followed (it could lead out of the inbox)".into(),
                );
            } else if kind.is_dir() {
                dirs.push(path);
            } else if name.ends_with(".parquet") {
                if !kind.is_file() {
                    skip(&mut out, &path, "not a regular file".into());
                    continue;
                }
                let modified = meta
                    .modified()
                    .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339())
                    .unwrap_or_default();
                out.entries.push(InboxEntry {
                    location: location_of(&path),
                    size: meta.len(),
                    modified,
                });
            }
        }
    }
    Ok(out)
}

/// `a/b/c.parquet` for a relative path.
fn location_of(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Copies the local entry `location` of `root` into `file`: a relative
/// path of plain names whose target is a regular file inside `root`, and
/// the file opened is the one checked.
fn copy_local(
    root: &Path,
    location: &str,
    file: &mut std::fs::File,
    hasher: &mut Sha256,
) -> Result<(), FetchError> {
    use std::os::unix::fs::MetadataExt;
    let rel = Path::new(location);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(FetchError::Refused(format!(
            "`{location}` is not a plain path inside the inbox"
        )));
    }
    let path = root.join(rel);
    let real = std::fs::canonicalize(&path).map_err(FetchError::Read)?;
    if real != path || !real.starts_with(root) {
        return Err(FetchError::Refused(
            "reached through a symbolic link: never followed (it could lead out of the inbox)"
                .into(),
        ));
    }
    let checked = std::fs::symlink_metadata(&real).map_err(FetchError::Read)?;
    if !checked.file_type().is_file() {
        return Err(FetchError::Refused("not a regular file".into()));
    }
    let mut src = std::fs::File::open(&real).map_err(FetchError::Read)?;
    let opened = src.metadata().map_err(FetchError::Read)?;
    if (opened.dev(), opened.ino()) != (checked.dev(), checked.ino()) {
        return Err(FetchError::Refused(
            "replaced while it was being opened".into(),
        ));
    }
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = src.read(&mut buf).map_err(FetchError::Read)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| FetchError::Local(SchedulerError::io("write", Path::new(location))(e)))?;
    }
}

/// Copies the object `location` of `store` into `file`.
async fn copy_object(
    store: &dyn ObjectStore,
    location: &str,
    file: &mut std::fs::File,
    hasher: &mut Sha256,
    tmp: &Path,
) -> Result<(), FetchError> {
    let got = store.get(&ObjectPath::from(location)).await?;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        file.write_all(&chunk)
            .map_err(SchedulerError::io("write", tmp))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_parquet_only_and_stores_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(inbox.join("sub")).unwrap();
        std::fs::write(inbox.join("a.parquet"), b"same bytes").unwrap();
        std::fs::write(inbox.join("sub/b.parquet"), b"same bytes").unwrap();
        std::fs::write(inbox.join(".partial.parquet"), b"half").unwrap();
        std::fs::write(inbox.join("notes.txt"), b"x").unwrap();
        for spec in [
            inbox.display().to_string(),
            format!("file://{}", inbox.display()),
        ] {
            let ib = Inbox::open(&spec).unwrap();
            let entries = ib.list().await.unwrap().entries;
            let names: Vec<&str> = entries.iter().map(|e| e.location.as_str()).collect();
            assert_eq!(names.len(), 2, "{spec}: {names:?}");
            assert!(names[0].ends_with("a.parquet") && names[1].ends_with("sub/b.parquet"));
            let store = dir.path().join("store");
            let (h1, p1) = ib.fetch(&entries[0], &store).await.unwrap();
            let (h2, p2) = ib.fetch(&entries[1], &store).await.unwrap();
            assert_eq!(h1, h2, "same bytes, same hash");
            assert_eq!(p1, p2);
            assert_eq!(h1, format!("{:x}", Sha256::digest(b"same bytes")));
            assert_eq!(std::fs::read(&p1).unwrap(), b"same bytes");
            let stored: Vec<_> = std::fs::read_dir(&store).unwrap().collect();
            assert_eq!(stored.len(), 1, "one copy, no temporary left");
        }
        assert!(Inbox::open(&dir.path().join("missing").display().to_string()).is_err());
    }
}
