//! The fuzz targets of `fuzz/` on stable Rust: every committed corpus input,
//! then random mutations of them (bit flips, interesting integers, splices,
//! truncation), through the batch decoder, the row rules and (whole
//! pyarrow-written Parquet files, `tests/fixtures`) the validating reader. No input may
//! panic, and none may ask the allocator for more than `MAX_ALLOCATION` at
//! once (the process aborts naming the size). Deterministic: the mutations
//! come from a fixed seed; `PRETEXT_FUZZ_ITERS` sets how many per target
//! (default 20,000), `PRETEXT_FUZZ_SEED` the seed. A failing input is saved
//! next to the test's temporary files, named in the panic.
//!
//! `cargo test -p pretext-core --test fuzz_corpus -- --ignored write_corpus`
//! rewrites the seed corpus from the encoder.

#[path = "../../../fuzz/src/targets.rs"]
mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{
    GenericListBuilder, Int64Builder, PrimitiveBuilder, StringBuilder, UInt8Builder,
};
use arrow_array::types::Float32Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::CompressionType;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::{Field, Schema};
use pretext_core::batch::{Batch, BatchRow, CONTENT_TYPE, IpcCompression, check_message};
use pretext_core::task::{MaskConfig, Task};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest single allocation any input may cause.
const MAX_ALLOCATION: usize = 512 * 1024 * 1024;

/// The system allocator, refusing (with a message, then an abort) any single
/// request over [`MAX_ALLOCATION`]: an unbounded allocation is a finding.
struct Bounded;

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            refuse(layout.size());
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            refuse(layout.size());
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            refuse(new_size);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Reports an oversized request without allocating, and aborts.
fn refuse(size: usize) -> ! {
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr();
    let _ = err.write_all(b"fuzz: an input asked for an allocation of ");
    let _ = err.write_all(&digits[i..]);
    let _ = err.write_all(b" bytes\n");
    std::process::abort();
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// The committed corpus of `target`, by file name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "corpus {} is (nearly) empty",
        dir.display()
    );
    files
}

/// Integers worth writing over a length, offset or count.
const INTERESTING: [i64; 12] = [
    0,
    1,
    -1,
    7,
    8,
    255,
    65_536,
    i32::MAX as i64,
    i32::MIN as i64,
    1 << 40,
    i64::MAX,
    i64::MIN,
];

/// One random mutation of `input`, sometimes spliced with `other`.
fn mutate(rng: &mut ChaCha8Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.random_range(0..4);
    for _ in 0..rounds {
        if out.is_empty() {
            out.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..out.len());
        match rng.random_range(0..8) {
            0 => out[at] ^= 1 << rng.random_range(0..8),
            1 => out[at] = rng.random(),
            2 => {
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
                let bytes = v.to_le_bytes();
                let end = (at + width).min(out.len());
                out[at..end].copy_from_slice(&bytes[..end - at]);
            }
            3 => out.truncate(at),
            4 => {
                let n = rng.random_range(1..=16.min(out.len() - at));
                out.drain(at..at + n);
            }
            5 => {
                let n = rng.random_range(1..=16);
                let fill: u8 = rng.random();
                out.splice(at..at, std::iter::repeat_n(fill, n));
            }
            6 if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                // Copy a chunk of the input over another place of it.
                let n = rng.random_range(1..=64.min(out.len()));
                let src = rng.random_range(0..=out.len() - n);
                let chunk = out[src..src + n].to_vec();
                let end = (at + n).min(out.len());
                out[at..end].copy_from_slice(&chunk[..end - at]);
            }
        }
    }
    out
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// Runs `target` on every corpus input and `PRETEXT_FUZZ_ITERS` mutations.
fn fuzz(name: &str, target: fn(&[u8])) {
    fuzz_inputs(
        name,
        corpus(name),
        env_u64("PRETEXT_FUZZ_ITERS", 20_000),
        &target,
    );
}

/// Runs `target` on `inputs` and `iters` mutations of them.
fn fuzz_inputs(name: &str, inputs: Vec<(String, Vec<u8>)>, iters: u64, target: &dyn Fn(&[u8])) {
    let mut rng = ChaCha8Rng::seed_from_u64(env_u64("PRETEXT_FUZZ_SEED", 1));
    // Panics of the Arrow reader that `read_stream` catches would flood the
    // output; any other panic is still shown.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_arrow = info
            .location()
            .is_some_and(|l| l.file().contains("/arrow-"));
        if !in_arrow {
            default_hook(info);
        }
    }));
    let start = Instant::now();
    let run = |i: u64, input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            let path =
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-failure-{name}-{i}.bin"));
            std::fs::write(&path, input).unwrap();
            panic!("{name}: input {i} panicked; saved as {}", path.display());
        }
    };
    for (i, (_, input)) in inputs.iter().enumerate() {
        run(i as u64, input);
    }
    let mut bytes = 0u64;
    for i in 0..iters {
        let a = &inputs[rng.random_range(0..inputs.len())].1;
        let b = &inputs[rng.random_range(0..inputs.len())].1;
        let input = mutate(&mut rng, a, b);
        bytes += input.len() as u64;
        run(inputs.len() as u64 + i, &input);
    }
    let took = start.elapsed();
    eprintln!(
        "fuzz {name}: {} inputs ({} corpus + {iters} mutated, {:.1} MiB) in {:.1} s, no panic, no allocation over {} MiB",
        inputs.len() as u64 + iters,
        inputs.len(),
        bytes as f64 / (1024.0 * 1024.0),
        took.as_secs_f64(),
        MAX_ALLOCATION >> 20
    );
}

#[test]
fn the_batch_decoder_survives_its_corpus_and_mutations() {
    // The seeds the encoder made must decode: the corpus is current.
    for (name, bytes) in corpus("batch_message") {
        if name.starts_with("valid-") {
            check_message(CONTENT_TYPE, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    fuzz("batch_message", targets::batch_message);
}

#[test]
fn row_validation_survives_its_corpus_and_mutations() {
    fuzz("rows", targets::rows);
}

/// The pyarrow-written fixtures (`tests/fixtures/make_fixtures.py`).
fn parquet_fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{} fixtures", files.len());
    files
}

#[test]
fn whole_parquet_files_survive_mutations() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("input.parquet");
    // Files are slower than messages: a tenth of the iterations.
    let iters = env_u64("PRETEXT_FUZZ_ITERS", 20_000) / 10;
    fuzz_inputs("parquet_file", parquet_fixtures(), iters, &|data| {
        targets::parquet_file(data, &scratch)
    });
}

/// The seed batches: every task, with and without compression, a few shapes.
fn batch_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (t, task) in [Task::Masked, Task::Next, Task::Classify]
        .into_iter()
        .enumerate()
    {
        for (c, compression) in [None, Some(IpcCompression::Lz4), Some(IpcCompression::Zstd)]
            .into_iter()
            .enumerate()
        {
            let rows: Vec<BatchRow> = (0..1 + t + c)
                .map(|r| BatchRow {
                    seq_id: format!("s{t}{c}{r}"),
                    values: (0..20 + 13 * r).map(|i| ((i * 7 + r) % 41) as u8).collect(),
                    label: (task == Task::Classify).then_some(r as i32 % 3),
                })
                .collect();
            let batch = Batch::build(task, &MaskConfig::default(), c as u32, 128, &rows);
            let name = format!("valid-{}-{}", task.as_str(), ["plain", "lz4", "zstd"][c]);
            seeds.push((name, batch.encode(compression)));
        }
    }
    seeds
}

fn ipc(batch: &RecordBatch, compression: Option<CompressionType>) -> Vec<u8> {
    let options = IpcWriteOptions::default()
        .try_with_compression(compression)
        .unwrap();
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new_with_options(&mut out, &batch.schema(), options).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    out
}

/// Raw-input record batches: valid rows and every kind of bad row, in the
/// layouts the contract accepts and some it does not.
fn row_seeds() -> Vec<(String, Vec<u8>)> {
    let lens = [600usize, 512, 10, 700, 31_000];
    let ids = ["a", "b", "c", "a", "e"];
    let value = |r: usize, i: usize| -> u8 {
        if r == 3 && i == 5 {
            41
        } else {
            ((i + r) % 41) as u8
        }
    };

    let mut values_u8 = GenericListBuilder::<i32, _>::new(UInt8Builder::new());
    let mut values_i64 = GenericListBuilder::<i64, _>::new(Int64Builder::new());
    let mut values_f32 = GenericListBuilder::<i32, _>::new(PrimitiveBuilder::<Float32Type>::new());
    for (r, &len) in lens.iter().enumerate() {
        for i in 0..len {
            values_u8.values().append_value(value(r, i));
            values_i64
                .values()
                .append_value(i64::from(value(r, i)) - i64::from(r == 4));
            values_f32.values().append_value(f32::from(value(r, i)));
        }
        values_u8.append(true);
        values_i64.append(r != 2);
        values_f32.append(true);
    }
    let mut id = StringBuilder::new();
    for (r, s) in ids.iter().enumerate() {
        if r == 4 {
            id.append_null();
        } else {
            id.append_value(s);
        }
    }
    let id: ArrayRef = Arc::new(id.finish());
    let label: ArrayRef = Arc::new(arrow_array::Int32Array::from(vec![
        Some(1),
        None,
        Some(2),
        Some(0),
        None,
    ]));
    let split: ArrayRef = Arc::new(arrow_array::StringArray::from(vec![
        Some("train"),
        Some("valid"),
        Some("test"),
        Some("bogus"),
        None,
    ]));
    let batch = |cols: Vec<(&str, ArrayRef)>| {
        let fields: Vec<Field> = cols
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            cols.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    };
    let u8s: ArrayRef = Arc::new(values_u8.finish());
    let i64s: ArrayRef = Arc::new(values_i64.finish());
    let f32s: ArrayRef = Arc::new(values_f32.finish());
    let full = batch(vec![
        ("id", id.clone()),
        ("values", u8s.clone()),
        ("label", label.clone()),
        ("split", split.clone()),
    ]);
    let large = batch(vec![("id", id.clone()), ("values", i64s)]);
    let floats = batch(vec![("id", id.clone()), ("values", f32s), ("label", label)]);
    let no_id = batch(vec![("values", u8s), ("split", split)]);
    vec![
        ("full-plain".into(), ipc(&full, None)),
        (
            "full-lz4".into(),
            ipc(&full, Some(CompressionType::LZ4_FRAME)),
        ),
        (
            "large-list-zstd".into(),
            ipc(&large, Some(CompressionType::ZSTD)),
        ),
        ("float-values".into(), ipc(&floats, None)),
        ("missing-id".into(), ipc(&no_id, None)),
    ]
}

/// Rewrites the seed corpus (run by hand when the encoder changes).
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_corpus() {
    for (target, seeds) in [("batch_message", batch_seeds()), ("rows", row_seeds())] {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        // A few mutants of each, so the corpus also holds near misses.
        for (name, bytes) in &seeds {
            for m in 0..2 {
                let other = &seeds[rng.random_range(0..seeds.len())].1;
                std::fs::write(
                    dir.join(format!("mutant-{name}-{m}")),
                    mutate(&mut rng, bytes, other),
                )
                .unwrap();
            }
        }
    }
}
