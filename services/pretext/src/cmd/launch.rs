//! `pretext launch --nproc N -- train ...`: starts N local ranks of a
//! data-parallel command, like torchrun on one machine, and waits for them.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Arguments of `pretext launch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ranks to start on this machine.
    #[arg(long, default_value_t = 2)]
    pub nproc: usize,
    /// Port of the rendezvous store (default: a free one).
    #[arg(long)]
    pub master_port: Option<u16>,
    /// The `pretext` subcommand and its arguments, after `--`
    /// (e.g. `-- train --broker amqp://… --run-dir run`).
    #[arg(required = true, last = true)]
    pub command: Vec<OsString>,
}

/// Starts the ranks with `MASTER_ADDR=127.0.0.1`, `MASTER_PORT`,
/// `WORLD_SIZE=N` and `RANK=i` (and `LOCAL_RANK=i`), forwards SIGTERM and
/// Ctrl-C to them, and waits for all. Fails when any rank fails.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.nproc == 0 {
        bail!("--nproc must be at least 1");
    }
    let port = match args.master_port {
        Some(p) => p,
        None => pretext_dist::free_port().context("finding a free port for the store")?,
    };
    let exe = std::env::current_exe().context("locating the pretext binary")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut children = Vec::with_capacity(args.nproc);
        for rank in 0..args.nproc {
            let child = Command::new(&exe)
                .args(&args.command)
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("WORLD_SIZE", args.nproc.to_string())
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting rank {rank}"))?;
            children.push(child);
        }
        tracing::info!(nproc = args.nproc, port, "ranks started");
        wait_all(children).await
    })
}

/// Waits for every rank, forwarding SIGTERM / Ctrl-C; the exit code of
/// the first rank that failed, if any.
async fn wait_all(children: Vec<Child>) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let pids: Vec<Option<u32>> = children.iter().map(Child::id).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (rank, mut child) in children.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send((rank, child.wait().await));
        });
    }
    drop(tx);
    let mut running: Vec<bool> = vec![true; pids.len()];
    let mut failed: Option<(usize, std::process::ExitStatus)> = None;
    loop {
        tokio::select! {
            done = rx.recv() => {
                let Some((rank, status)) = done else { break };
                let status = status.with_context(|| format!("waiting for rank {rank}"))?;
                running[rank] = false;
                if status.success() {
                    tracing::info!(rank, "rank finished");
                } else {
                    tracing::error!(rank, %status, "rank failed");
                    failed.get_or_insert((rank, status));
                }
            }
            _ = term.recv() => forward(&pids, &running, "TERM"),
            _ = int.recv() => forward(&pids, &running, "INT"),
        }
    }
    match failed {
        None => Ok(ExitCode::SUCCESS),
        Some((rank, status)) => {
            eprintln!("rank {rank} failed ({status})");
            let code = status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .filter(|&c| c != 0)
                .unwrap_or(1);
            Ok(ExitCode::from(code))
        }
    }
}

/// Sends `signal` to the ranks still running (they checkpoint and exit).
fn forward(pids: &[Option<u32>], running: &[bool], signal: &str) {
    for (rank, pid) in pids.iter().enumerate() {
        if let (Some(pid), true) = (pid, running[rank]) {
            let sent = std::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
            if !matches!(sent, Ok(s) if s.success()) {
                tracing::warn!(rank, pid, signal, "could not forward the signal");
            }
        }
    }
}
