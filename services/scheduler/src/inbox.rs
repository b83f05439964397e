//! The inbox: a local directory, or any object store URL `object_store`
//! understands (`file:///…`; `s3://…` and the like when their features are
//! built in). Listing yields the `*.parquet` objects (names starting with
//! `.` are skipped: write a file under such a name and rename it when
//! complete). Fetching copies an object into the scheduler's own store as
//! `<sha-256>.parquet`, hashing while it copies.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use std::io::Write;

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

/// An opened inbox.
pub struct Inbox {
    store: Arc<dyn ObjectStore>,
    prefix: Option<ObjectPath>,
    name: String,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("name", &self.name).finish()
    }
}

impl Inbox {
    /// A local directory (which must exist), or a URL with a scheme.
    pub fn open(spec: &str) -> Result<Self, SchedulerError> {
        let err = |source| SchedulerError::Inbox {
            inbox: spec.to_owned(),
            source,
        };
        if spec.contains("://") {
            let url = url::Url::parse(spec)
                .map_err(|e| SchedulerError::Config(format!("inbox URL `{spec}`: {e}")))?;
            let (store, prefix) = object_store::parse_url(&url).map_err(err)?;
            return Ok(Self {
                store: Arc::from(store),
                prefix: Some(prefix).filter(|p| !p.as_ref().is_empty()),
                name: spec.to_owned(),
            });
        }
        let dir = Path::new(spec);
        if !dir.is_dir() {
            return Err(SchedulerError::Config(format!(
                "the inbox {spec} is not a directory"
            )));
        }
        let store = LocalFileSystem::new_with_prefix(dir).map_err(err)?;
        Ok(Self {
            store: Arc::new(store),
            prefix: None,
            name: spec.to_owned(),
        })
    }

    /// What the inbox is called in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self) -> impl FnOnce(object_store::Error) -> SchedulerError + '_ {
        move |source| SchedulerError::Inbox {
            inbox: self.name.clone(),
            source,
        }
    }

    /// The `*.parquet` objects, sorted by location.
    pub async fn list(&self) -> Result<Vec<InboxEntry>, SchedulerError> {
        let mut stream = self.store.list(self.prefix.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(self.err())?;
            let name = meta.location.filename().unwrap_or_default();
            if name.starts_with('.') || !name.ends_with(".parquet") {
                continue;
            }
            out.push(InboxEntry {
                location: meta.location.to_string(),
                size: meta.size,
                modified: meta.last_modified.to_rfc3339(),
            });
        }
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    /// Copies `entry` into `store_dir` as `<sha-256>.parquet` (written to a
    /// temporary name, synced, then renamed) and returns the hash and the
    /// copy. A content already stored is not written again.
    pub async fn fetch(
        &self,
        entry: &InboxEntry,
        store_dir: &Path,
    ) -> Result<(String, PathBuf), SchedulerError> {
        std::fs::create_dir_all(store_dir).map_err(SchedulerError::io("create", store_dir))?;
        let tmp = store_dir.join(format!(".fetch-{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(SchedulerError::io("create", &tmp))?;
        let location = ObjectPath::from(entry.location.as_str());
        let got = self.store.get(&location).await.map_err(self.err())?;
        let mut stream = got.into_stream();
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.err())?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(SchedulerError::io("write", &tmp))?;
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
            let entries = ib.list().await.unwrap();
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
