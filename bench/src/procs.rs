//! The processes under test: building and starting crmchat, the bare-axum baseline (this binary re-executed),
//! and their RSS and CPU time read from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// `crmchat` next to this executable, built first with `cargo build --bin crmchat` (same profile), so that
/// `cargo run --profile perf -p crmchat-bench` always measures the current code: cargo, not a comparison of file
/// times, decides whether the server is up to date (a change to the server alone leaves the bench's own
/// executable as it was).
pub fn crmchat_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("crmchat");
    {
        // The profile is the name of the directory this executable was built into (`target/perf/`).
        let profile = me.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned());
        let profile = profile.filter(|p| p != "debug");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(["build", "-p", "crmchat", "--bin", "crmchat"]);
        // `cargo run` hands its package variables to this process. Passed on, they change the fingerprint of
        // build scripts that watch them (ring watches CARGO_MANIFEST_DIR), and every run would rebuild.
        for (name, _) in std::env::vars_os() {
            let name_str = name.to_string_lossy();
            if name_str.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                ]
                .contains(&name_str.as_ref())
            {
                cmd.env_remove(&name);
            }
        }
        let flag = profile.map(|p| format!(" --profile {p}")).unwrap_or_default();
        cmd.args(flag.split_whitespace());
        println!("building crmchat: cargo build -p crmchat --bin crmchat{flag}");
        let status = cmd.status().context("running cargo build")?;
        anyhow::ensure!(status.success(), "cargo build --bin crmchat failed");
    }
    anyhow::ensure!(path.exists(), "{} is missing", path.display());
    Ok(path)
}

/// A server child that printed `http: http://ADDR` and `ready` on standard output.
pub struct Server {
    pub name: &'static str,
    child: Child,
    pub addr: SocketAddr,
    log: Option<LogTail>,
}

impl Server {
    /// Start the server; its standard error (the log) ends up in `log`, only the last [`LOG_TAIL_BYTES`] of it.
    pub fn start(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let log = LogTail::start(child.stderr.take().expect("piped"), log.to_path_buf());
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut addr = None;
        loop {
            let Some(line) = lines.next().transpose()? else {
                let status = child.wait()?;
                let path = log.finish()?;
                bail!("{name} exited ({status}) before it was ready; see {}", path.display());
            };
            if let Some(a) = line.strip_prefix("http: http://") {
                addr = Some(a.trim().parse::<SocketAddr>().with_context(|| format!("{name} printed {line:?}"))?);
            } else if line.trim() == "ready" {
                break;
            }
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            bail!("{name} was ready without printing its http address");
        };
        // Keep draining standard output so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { name, child, addr, log: Some(log) })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for the graceful shutdown (killed after `grace`).
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!("note: {} exited with {status}", self.name);
                }
                self.finish_log()?;
                return Ok(());
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                self.finish_log()?;
                bail!("{} did not stop within {grace:?} of SIGTERM; killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    fn finish_log(&mut self) -> anyhow::Result<()> {
        if let Some(log) = self.log.take() {
            log.finish()?;
        }
        Ok(())
    }
}

/// A benchmark that fails half-way leaves no server behind.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = self.finish_log();
    }
}

/// How much of a server's log is kept: at info level crmchat logs every request, which would be gigabytes.
const LOG_TAIL_BYTES: usize = 1 << 20;

/// Reads a child's standard error on a thread, keeping the last [`LOG_TAIL_BYTES`]; written out by `finish`.
struct LogTail {
    thread: std::thread::JoinHandle<(Vec<u8>, u64)>,
    path: PathBuf,
}

impl LogTail {
    fn start(mut from: impl std::io::Read + Send + 'static, path: PathBuf) -> Self {
        let thread = std::thread::spawn(move || {
            let (mut tail, mut total) = (Vec::with_capacity(2 * LOG_TAIL_BYTES), 0u64);
            let mut buf = vec![0; 256 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                // Let the pipe fill between reads: a reader blocked in read() would be woken by every log line,
                // which costs the server a cross-process wake-up per request (~15% of its CPU at info level).
                std::thread::sleep(Duration::from_millis(1));
                total += n as u64;
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * LOG_TAIL_BYTES {
                    tail.drain(..tail.len() - LOG_TAIL_BYTES);
                }
            }
            (tail, total)
        });
        Self { thread, path }
    }

    /// Wait for the end of the stream (the child has exited) and write the kept part.
    fn finish(self) -> anyhow::Result<PathBuf> {
        let (mut tail, total) = self.thread.join().unwrap_or_default();
        if (tail.len() as u64) < total {
            // Start at a whole line.
            let start = tail.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            let note = format!("[crmchat-bench: {total} bytes logged, only the last {} kept]\n", tail.len() - start);
            tail.splice(..start, note.into_bytes());
        }
        std::fs::write(&self.path, tail).with_context(|| format!("writing {}", self.path.display()))?;
        Ok(self.path)
    }
}

/// User + system CPU time of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis (field 3 = state).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

/// CPU time all processes of the machine spent busy (user, nice, system, irq, softirq, steal), in seconds.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).take(8).map(|f| f.parse().unwrap_or(0)).collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    Some(busy as f64 / clock_ticks() as f64)
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Resident set size in kB (`VmRSS` of /proc/PID/status).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's RSS every 50 ms on a thread: the maximum since the last `take_max` and overall.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    window_max: Arc<AtomicU64>,
    overall_max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let window_max = Arc::new(AtomicU64::new(0));
        let overall_max = Arc::new(AtomicU64::new(0));
        let (s, w, o) = (stop.clone(), window_max.clone(), overall_max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    w.fetch_max(kb, Ordering::Relaxed);
                    o.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { stop, window_max, overall_max, thread: Some(thread) }
    }

    /// The largest RSS (MB) seen since the previous call.
    pub fn take_max_mb(&self) -> f64 {
        self.window_max.swap(0, Ordering::Relaxed) as f64 / 1024.0
    }

    /// Stop sampling; the largest RSS (MB) seen overall.
    pub fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.overall_max.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// A fixed answer shaped like a REST success (`result` and `time`), about 150 bytes.
const BASELINE_BODY: &str = concat!(
    r#"{"result":"2026-11-25T19:10:17+00:00","time":{"start":1764097817.123456,"finish":1764097817.123501,"#,
    r#""duration":0.000045,"processing":0.000012}}"#
);

/// The hidden `baseline` subcommand: bare axum answering every request with [`BASELINE_BODY`], on the same runtime
/// settings as crmchat (a default multi-thread tokio runtime), printing its address like crmchat does.
pub fn serve_baseline(addr: SocketAddr) -> anyhow::Result<()> {
    use axum::http::header;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("http: http://{}", listener.local_addr()?);
        println!("ready");
        let app =
            axum::Router::new().fallback(|| async { ([(header::CONTENT_TYPE, "application/json")], BASELINE_BODY) });
        let shutdown = async {
            if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                term.recv().await;
            }
        };
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
        Ok(())
    })
}
