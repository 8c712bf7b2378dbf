//! What /proc says about the server processes (resident memory) and about file limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resident memory of all the server processes, summed, in MiB (`None` without PIDs or
/// when one of them cannot be read).
pub fn server_rss_mib(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| rss_mib(*pid)).sum()
}

/// Open file descriptors of all the server processes, summed (`None` without PIDs or when
/// one cannot be read): the sockets a server has accepted show here, whatever the clients
/// believe is connected.
pub fn server_open_files(pids: &[u32]) -> Option<usize> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|pid| Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count()))
        .sum()
}

/// Samples the servers' summed resident memory every 100 ms on its own thread (so that a
/// busy runtime does not skip samples) and keeps the highest.
#[derive(Debug)]
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<Option<f64>>,
}

impl PeakRss {
    pub fn start(pids: &[u32]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let pids = pids.to_vec();
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            loop {
                // One last sample after the stop, so the peak covers the whole window.
                let last = stopped.load(Ordering::Relaxed);
                if let Some(rss) = server_rss_mib(&pids) {
                    peak = Some(peak.map_or(rss, |peak| peak.max(rss)));
                }
                if last {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, sampler }
    }

    /// Stops sampling; the highest reading.
    pub fn finish(self) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().ok().flatten()
    }
}

/// File descriptors a process keeps besides its sockets (listener, database pool, logs,
/// the runtime's own), with room to spare.
const SPARE_FILES: u64 = 256;

/// The soft limit on open files of a process (`self` or a PID), from /proc.
fn open_files_limit(process: &str) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{process}/limits")).ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Fails, saying so, when this process (holding `sockets`) or a server process (holding
/// its share) would run out of file descriptors: better than connects failing with
/// "too many open files" half-way through. Limits that cannot be read are not checked.
pub fn check_open_files(sockets: usize, per_server: &[(u32, usize)]) -> anyhow::Result<()> {
    let need = |sockets: usize| sockets as u64 + SPARE_FILES;
    if let Some(limit) = open_files_limit("self")
        && limit < need(sockets)
    {
        bail!(
            "{sockets} sockets need about {} file descriptors in the load generator, but its \
             limit is {limit}: raise it (ulimit -n) or open fewer sockets",
            need(sockets)
        );
    }
    for &(pid, share) in per_server {
        if let Some(limit) = open_files_limit(&pid.to_string())
            && limit < need(share)
        {
            bail!(
                "server process {pid} would hold {share} sockets, about {} file descriptors, \
                 but its limit is {limit}: raise it (ulimit -n) or open fewer sockets",
                need(share)
            );
        }
    }
    Ok(())
}
