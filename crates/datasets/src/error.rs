//! The one error type of the datasets crate.

use std::path::{Path, PathBuf};

use pretext_core::input::InputError;

/// Why a dataset could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A config value is out of range.
    #[error("invalid {what} config: {reason}")]
    Config {
        /// Which command's config (`gen-data`, `import-genomes`).
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Neither the source nor any `examples` directory below it holds
    /// species directories with FASTA files.
    #[error(
        "{0}: no species directories with references/*.fasta[.gz] here or in an `examples` directory below"
    )]
    NoSpecies(PathBuf),
    /// A FASTA file breaks the format.
    #[error("{path}: line {line}: {reason}")]
    Fasta {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The input could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding Parquet failed.
    #[error("writing {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
}

/// Maps an I/O error on `path` during `op` to [`DatasetError::Io`].
pub(crate) fn io(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> DatasetError + use<> {
    let path = path.to_path_buf();
    move |source| DatasetError::Io { op, path, source }
}
