//! Append-only JSON-lines files that survive a crash mid-append: opening
//! one for appending first cuts a torn last line (a fragment without its
//! newline), so the next line starts on a line of its own. The producers'
//! manifests and the trainer's ledger of applied batch ids are such files.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Opens `path` for appending (creating it), after cutting a torn last line.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    repair_torn_tail(&file)?;
    Ok(file)
}

/// Appends `lines` (each without its newline) and syncs them to disk.
pub fn append_synced(file: &mut File, lines: &[Vec<u8>]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        buf.extend_from_slice(l);
        buf.push(b'\n');
    }
    file.write_all(&buf)?;
    file.sync_data()
}

/// The lines of `path` that parse as `T`, in order: a line that does not (a
/// torn last line, a crash mid-append) is not a confirmed record and is
/// skipped. No file: no records.
pub fn read_records<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Vec<T>> {
    use std::io::BufRead;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        if let Ok(record) = serde_json::from_str(&line?) {
            out.push(record);
        }
    }
    Ok(out)
}

/// Truncates `file` after its last newline (a file that does not end in
/// one ends in a torn, unconfirmed line).
fn repair_torn_tail(file: &File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut f = file;
    // Scan back in blocks for the last newline.
    let mut end = len;
    let mut block = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
                file.sync_data()?;
            }
            return Ok(());
        }
        end = start;
    }
    file.set_len(0)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let mut f = open_append(&path).unwrap();
        append_synced(&mut f, &[b"{\"a\":1}".to_vec()]).unwrap();
        drop(f);
        // A crash mid-append; the newline of a long fragment is more than a
        // block back.
        let mut torn = OpenOptions::new().append(true).open(&path).unwrap();
        torn.write_all(&[b'x'; 10_000]).unwrap();
        drop(torn);
        let mut f = open_append(&path).unwrap();
        append_synced(&mut f, &[b"{\"b\":2}".to_vec()]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        // A file that is all fragment is emptied.
        std::fs::write(&path, b"{\"c\"").unwrap();
        let mut f = open_append(&path).unwrap();
        append_synced(&mut f, &[b"{}".to_vec()]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
    }
}
