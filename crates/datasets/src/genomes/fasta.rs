//! Finding the species directories and strain files of an import, and parsing FASTA.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::kmer::base_value;
use super::{FASTA_EXTENSIONS, io_err};
use crate::error::DatasetError;

/// One species directory: its name and FASTA files, sorted.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct SpeciesFiles {
    pub(super) name: String,
    pub(super) files: Vec<PathBuf>,
}

/// The strain name of a FASTA file: its name without `.gz` and the FASTA
/// ending; `None` if it is not a FASTA file.
pub(super) fn strain_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let (stem, ext) = name.rsplit_once('.')?;
    (FASTA_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) && !stem.is_empty())
        .then(|| stem.to_owned())
}

pub(super) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    entries.sort();
    Ok(entries)
}

/// The species directories directly under `root` (those with FASTA files
/// in `references/`), sorted by name.
pub(super) fn species_under(root: &Path) -> Result<Vec<SpeciesFiles>, DatasetError> {
    let mut out = Vec::new();
    for dir in sorted_entries(root)? {
        let refs = dir.join("references");
        if !refs.is_dir() {
            continue;
        }
        let files: Vec<PathBuf> = sorted_entries(&refs)?
            .into_iter()
            .filter(|p| p.is_file() && strain_name(p).is_some())
            .collect();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !files.is_empty() {
            out.push(SpeciesFiles {
                name: name.to_owned(),
                files,
            });
        }
    }
    Ok(out)
}

/// The directory whose subdirectories are the species: `source` itself if
/// it is one, else the first directory named `examples` below it that is
/// one (breadth first, sorted, not following links; e.g. the root a
/// `ragout-examples` package was unpacked into).
pub fn resolve_source(source: &Path) -> Result<PathBuf, DatasetError> {
    const MAX_DEPTH: usize = 10;
    if !species_under(source)?.is_empty() {
        return Ok(source.to_path_buf());
    }
    let mut level = vec![source.to_path_buf()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for dir in &level {
            for e in sorted_entries(dir)? {
                let is_dir = std::fs::symlink_metadata(&e).is_ok_and(|m| m.is_dir());
                if !is_dir {
                    continue;
                }
                if e.file_name().is_some_and(|n| n == "examples") && !species_under(&e)?.is_empty()
                {
                    return Ok(e);
                }
                next.push(e);
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    Err(DatasetError::NoSpecies(source.to_path_buf()))
}

/// One FASTA record, bases already mapped to values.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Record {
    pub(super) name: String,
    pub(super) values: Vec<u8>,
}

/// Reads a FASTA file (gzip when it ends in `.gz`, members concatenated).
pub(super) fn read_fasta(path: &Path) -> Result<Vec<Record>, DatasetError> {
    let file = File::open(path).map_err(io_err(path))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    parse_fasta(BufReader::with_capacity(1 << 16, reader), path)
}

pub(super) fn parse_fasta(
    mut reader: impl BufRead,
    path: &Path,
) -> Result<Vec<Record>, DatasetError> {
    let mut records: Vec<Record> = Vec::new();
    let mut names = HashSet::new();
    let mut line = Vec::new();
    let mut n = 0;
    let fasta_err = |line: usize, reason: String| DatasetError::Fasta {
        path: path.to_path_buf(),
        line,
        reason,
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io_err(path))? == 0 {
            break;
        }
        n += 1;
        if let Some(header) = line.strip_prefix(b">") {
            let header = String::from_utf8_lossy(header);
            let name = header.split_whitespace().next().unwrap_or("").to_owned();
            if name.is_empty() {
                return Err(fasta_err(n, "header without a name".into()));
            }
            if !names.insert(name.clone()) {
                return Err(fasta_err(n, format!("record `{name}` appears twice")));
            }
            records.push(Record {
                name,
                values: Vec::new(),
            });
        } else if line.first() == Some(&b';') {
            continue;
        } else {
            let bases = line.iter().filter(|b| !b.is_ascii_whitespace());
            match records.last_mut() {
                Some(r) => r.values.extend(bases.map(|&b| base_value(b))),
                None if bases.clone().next().is_none() => {}
                None => return Err(fasta_err(n, "sequence before the first header".into())),
            }
        }
    }
    if records.is_empty() {
        return Err(fasta_err(n, "no records".into()));
    }
    Ok(records)
}
