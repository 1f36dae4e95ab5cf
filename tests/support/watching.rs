//! A running `mcpctl watch` for end-to-end tests: started on a free
//! loopback port with its log in a file, read over HTTP (`/healthz`,
//! `/metrics`), stopped with SIGTERM, killed when dropped. Include it with
//! `#[path = "support/watching.rs"] mod watching;` after `mod fixture;` and
//! `mod fleet;`.
#![allow(dead_code)] // Each including test binary uses a different subset.

use super::fixture;
use super::fleet::{Fleet, eventually};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Watching {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Watching {
    /// Spawns `mcpctl watch ARGS` in the fleet's workspace with `env` on
    /// top of the fleet's, without waiting for anything.
    pub fn spawn(f: &Fleet, args: &[&str], env: &[(&str, &str)]) -> Watching {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = f.dir.path().join(format!("watch-{}.log", addr.port()));
        let listen = addr.to_string();
        let mut all = vec!["watch", "--listen", &listen];
        all.extend_from_slice(args);
        let mut command = f.command(&all);
        command
            .env("MCPCTL_LOG", "mcpctl=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn watch");
        Watching {
            child: Some(child),
            addr,
            log,
        }
    }

    /// [`spawn`](Self::spawn), then waits until it serves `/healthz`.
    pub fn start(f: &Fleet, args: &[&str], env: &[(&str, &str)]) -> Watching {
        let mut w = Watching::spawn(f, args, env);
        eventually("watch to listen", Duration::from_secs(30), || {
            w.assert_alive();
            w.get("/healthz").ok().map(|_| ())
        });
        w
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Panics, with the log, if the process has exited.
    pub fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("watch exited ({status}):\n{}", self.log());
        }
    }

    pub fn get(&self, path: &str) -> Result<fixture::HttpReply, String> {
        fixture::http_request(self.addr, "GET", path, &[], None, Duration::from_secs(5))
    }

    /// A counter or gauge of `/metrics`, by its full name (labels included).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").expect("metrics").body;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// SIGTERM, then the exit status, within a deadline.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "watch did not stop on SIGTERM:\n{}",
                self.log()
            );
            // Polling a child process against a deadline.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
