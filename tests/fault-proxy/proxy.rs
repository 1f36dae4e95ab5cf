//! The `fault-proxy` example: the engine socket proxy of
//! `tests/support/proxy.rs` as a process, for `scripts/soak`. It listens on
//! `--listen`, relays to the engine's socket (`--upstream`, else the one
//! `DOCKER_HOST` names, else `/var/run/docker.sock`), prints `listening`
//! once it does, and takes one command a line from the FIFO `--control`
//! (made if missing):
//!
//! ```text
//! cut             close every open connection at once
//! refuse SECONDS  refuse new connections for that long
//! refuse on|off   refuse new connections until told otherwise
//! stall on|off    accept, but move no byte either way
//! quit            stop
//! ```

#[path = "../support/proxy.rs"]
mod proxy;

use clap::Parser;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// The unix socket clients connect to.
    #[arg(long)]
    listen: PathBuf,
    /// The engine's socket.
    #[arg(long)]
    upstream: Option<PathBuf>,
    /// The FIFO commands arrive on.
    #[arg(long)]
    control: PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("cannot make the control FIFO {0}: mkfifo failed")]
    Fifo(PathBuf),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fault-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    if !args.control.exists() {
        let made = std::process::Command::new("mkfifo")
            .arg(&args.control)
            .status()
            .map_err(|e| Error::Io("mkfifo".into(), e))?;
        if !made.success() {
            return Err(Error::Fifo(args.control));
        }
    }
    let upstream = args.upstream.unwrap_or_else(proxy::engine_socket);
    let proxy = proxy::EngineProxy::start_at(&args.listen, &upstream)
        .map_err(|e| Error::Io(format!("listen on {}", args.listen.display()), e))?;
    println!("listening");
    let _ = std::io::stdout().flush();
    loop {
        // Opening a FIFO waits for a writer; each writer may send several lines.
        let fifo = std::fs::File::open(&args.control)
            .map_err(|e| Error::Io(format!("open {}", args.control.display()), e))?;
        for line in BufReader::new(fifo).lines() {
            let line = line.map_err(|e| Error::Io("read a command".into(), e))?;
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["cut"] => proxy.cut(),
                ["refuse", "on"] => proxy.refuse(true),
                ["refuse", "off"] => proxy.refuse(false),
                ["refuse", secs] => match secs.parse::<f64>() {
                    Ok(s) if s.is_finite() && s >= 0.0 => {
                        proxy.refuse_for(Duration::from_secs_f64(s))
                    }
                    _ => eprintln!("fault-proxy: not a number of seconds: {secs}"),
                },
                ["stall", "on"] => proxy.stall(true),
                ["stall", "off"] => proxy.stall(false),
                ["quit"] => return Ok(()),
                _ => eprintln!("fault-proxy: unknown command: {line}"),
            }
            eprintln!(
                "fault-proxy: {line} (accepted {}, open {})",
                proxy.accepted(),
                proxy.open()
            );
        }
    }
}
