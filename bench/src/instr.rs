//! `crmchat-bench --instructions`: instructions per request, counted by callgrind, for crmchat and the bare
//! server, so that a change's cost is measured without the machine's noise (see "Instructions per request" in
//! bench/README.md).
//!
//! Each server runs under `valgrind --tool=callgrind`. After a warm-up, every workload is sent twice from
//! [`CONNS`] keep-alive connections, N1 and then N2 requests, each run between `callgrind_control -z` (zero the
//! counters) and `callgrind_control -d` (dump them); the cost per request is (total2 - total1) / (N2 - N1), so
//! what does not grow with the requests (connecting, start-up, idle work) cancels out.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use crate::load::{self, Job, Spec, WorkList};
use crate::portal::{self, Portal};
use crate::procs::Server;
use crate::{Args, round, thousands, verdict};

/// Keep-alive connections of every run.
const CONNS: usize = 8;
/// Requests of each workload before its measured runs.
const WARMUP_REQUESTS: u64 = 300;
/// `server.time` calls sent to crmchat first, so that its request journal (10,000 entries by default) is full and
/// every measured call replaces an entry, as on a server that has been up for a while.
const JOURNAL_FILL: u64 = 10_500;
/// Chats of the portal unless `--chats` says otherwise (× `--members`, 20 by default: 10,000 memberships).
const DEFAULT_CHATS: usize = 500;
/// The wait between a run's last answer and the dump, so that the server is done with the closed connections.
const SETTLE: Duration = Duration::from_millis(200);
/// Minimum ratio bare/crmchat of the instructions per request.
const GOAL_SERVER_TIME: f64 = 0.80;
const GOAL_GET_LAST_ID: f64 = 0.70;
const GOAL_USER_DELETE: f64 = 0.35;

/// One measured workload.
struct Row {
    key: &'static str,
    title: &'static str,
    /// Per repetition, the instruction totals of the N1 and the N2 run.
    totals: Vec<[u64; 2]>,
    /// Per repetition, (total2 - total1) / (N2 - N1).
    per_request: Vec<f64>,
    goal: Option<f64>,
}

impl Row {
    fn new(
        key: &'static str,
        title: &'static str,
        goal: Option<f64>,
        totals: Vec<[u64; 2]>,
        [n1, n2]: [u64; 2],
    ) -> Self {
        let per_request = totals.iter().map(|[t1, t2]| (*t2 as f64 - *t1 as f64) / (n2 - n1) as f64).collect();
        Self { key, title, totals, per_request, goal }
    }

    /// The median of the repetitions (of an even number, the mean of the middle two).
    fn median(&self) -> f64 {
        let mut v = self.per_request.clone();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 }
    }

    fn min_max(&self) -> (f64, f64) {
        let min = self.per_request.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.per_request.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (n1, n2) = (args.n1, args.n2);
    anyhow::ensure!(n1 > 0 && n2 > n1, "--n2 ({n2}) must be larger than --n1 ({n1}), both positive");
    let chats = args.chats.unwrap_or(DEFAULT_CHATS);
    let out_dir = args.out.clone().unwrap_or_else(crate::default_out_dir);
    let work = out_dir.join("instructions");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    for entry in std::fs::read_dir(&work)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("callgrind.out.")) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let valgrind = valgrind_version()?;
    let crmchat = crate::crmchat_binary(args)?;
    let me = std::env::current_exe()?;
    let profile = me.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned());
    if profile.as_deref() == Some("debug") {
        println!(
            "warning: this is a debug build of the bench, so the bare server it measures is one too: its figures \
             mean nothing (run with --profile perf or --release)"
        );
    }
    let reps = args.reps;
    anyhow::ensure!(reps > 0, "--reps must be positive");
    let deletes = WARMUP_REQUESTS + reps * (n1 + n2);
    let memberships = chats * args.members;
    anyhow::ensure!(
        deletes as usize <= memberships,
        "the portal has {memberships} memberships, fewer than the {deletes} removals: raise --chats"
    );
    println!(
        "crmchat-bench --instructions: {valgrind} callgrind; {} chats x {} members = {} memberships; \
         {CONNS} connections, {WARMUP_REQUESTS} warm-up requests, then {reps} x (N1 = {n1}, N2 = {n2}) per workload",
        thousands(chats as u64),
        args.members,
        thousands(memberships as u64),
    );
    println!("measuring {}", crmchat.display());

    let t = Instant::now();
    let portal = Portal::generate(chats, args.members, args.users, args.seed)?;
    let state_file = work.join("portal.json");
    portal.write_state(&state_file)?;
    let data_dir = work.join("data");
    crate::load_state(&crmchat, &state_file, &data_dir, &work.join("load.log"))?;
    println!("generated and loaded with `crmchat state load` in {:.1} s", t.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let send = |server: &Server, webhook: usize, job: Job, requests: u64| -> anyhow::Result<()> {
        let spec = Spec {
            addr: server.addr,
            conns: CONNS,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(3600),
            job,
            webhook_code: portal::webhook_code(webhook),
            server_pid: server.pid(),
            sched: args.loadgen_sched,
            acks: None,
            requests: Some(requests),
        };
        let out = runtime.block_on(load::run(spec))?;
        for e in &out.first_errors {
            println!("      error: {e}");
        }
        anyhow::ensure!(
            out.errors == 0 && out.ok_total == requests,
            "{} of {requests} requests answered as expected, {} errors",
            out.ok_total,
            out.errors
        );
        Ok(())
    };
    // Warm up, then the two measured runs.
    let measure = |cg: &Callgrind,
                   key: &'static str,
                   title: &'static str,
                   goal: Option<f64>,
                   webhook: usize,
                   job: &dyn Fn() -> Job|
     -> anyhow::Result<Row> {
        send(&cg.server, webhook, job(), WARMUP_REQUESTS)?;
        let mut totals = Vec::new();
        for _ in 0..reps {
            let mut pair = [0; 2];
            for (total, n) in pair.iter_mut().zip([n1, n2]) {
                cg.control("-z")?;
                send(&cg.server, webhook, job(), n)?;
                std::thread::sleep(SETTLE);
                *total = cg.dump()?;
            }
            println!(
                "  {title:<24} {:>15} and {:>15} instructions: {:>8} per request",
                thousands(pair[0]),
                thousands(pair[1]),
                thousands(((pair[1] as f64 - pair[0] as f64) / (n2 - n1) as f64).round() as u64)
            );
            totals.push(pair);
        }
        Ok(Row::new(key, title, goal, totals, [n1, n2]))
    };

    let mut rows = Vec::new();
    // The bare server: this executable as `baseline`.
    let args_of = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
    let cg = Callgrind::start("baseline", &me, &args_of(&["baseline", "--addr", "127.0.0.1:0"]), &work, None)?;
    rows.push(measure(&cg, "bare_axum", "bare axum (fixed JSON)", None, 0, &|| Job::ServerTime)?);
    cg.stop()?;

    let mut serve = args_of(&["serve", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--data-dir"]);
    serve.push(data_dir.clone().into());
    let cg = Callgrind::start("crmchat", &crmchat, &serve, &work, args.server_log.as_deref())?;
    let t = Instant::now();
    send(&cg.server, 1, Job::ServerTime, JOURNAL_FILL)?;
    println!(
        "  journal filled with {} server.time calls in {:.1} s",
        thousands(JOURNAL_FILL),
        t.elapsed().as_secs_f64()
    );
    rows.push(measure(&cg, "server_time", "server.time (webhook)", Some(GOAL_SERVER_TIME), 1, &|| Job::ServerTime)?);
    let get_last_id = || Job::GetLastId { chats: chats as u32 };
    rows.push(measure(&cg, "get_last_id", "crm.chat.getLastId", Some(GOAL_GET_LAST_ID), 2, &get_last_id)?);
    // Every removal a different membership, spread over the whole portal; one list for the warm-up and both runs.
    let mut removals = portal.memberships.clone();
    removals.shuffle(&mut StdRng::seed_from_u64(args.seed));
    let removals = Arc::new(WorkList::new(removals));
    let delete = || Job::Delete(removals.clone());
    rows.push(measure(&cg, "user_delete", "user.delete", Some(GOAL_USER_DELETE), 3, &delete)?);
    cg.stop()?;

    let bare = rows[0].median();
    let ratio = |r: &Row| bare / r.median();
    let pass = |r: &Row| r.goal.map(|g| ratio(r) >= g);
    println!();
    println!("{:<24} {:>10} {:>19} {:>12}  {:<8} pass", "workload", "instr/req", "min-max", "bare/crmchat", "goal");
    for r in &rows {
        let goal = r.goal.map_or_else(|| "(base)".into(), |g| format!(">= {g:.2}"));
        let (min, max) = r.min_max();
        let spread = format!("{}-{}", thousands(min.round() as u64), thousands(max.round() as u64));
        println!(
            "{:<24} {:>10} {spread:>19} {:>12.3}  {goal:<8} {}",
            r.title,
            thousands(r.median().round() as u64),
            ratio(r),
            pass(r).map_or("-", verdict)
        );
    }
    println!();
    let total_s = started.elapsed().as_secs_f64();
    println!(
        "instructions in user space only (callgrind does not see the kernel); per request = (N2 total - N1 total) / \
         {}, the median of {reps}; took {total_s:.0} s; callgrind dumps in {}",
        n2 - n1,
        work.display()
    );

    let goals_pass = rows.iter().filter_map(pass).all(|p| p);
    let workloads: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "key": r.key,
                "workload": r.title,
                "instructions_per_request": round(r.median(), 0),
                "repetitions": r.totals.iter().zip(&r.per_request).map(|([t1, t2], per)| json!({
                    "instructions_n1": t1, "instructions_n2": t2, "per_request": round(*per, 0),
                })).collect::<Vec<_>>(),
                "ratio_bare_to_this": round(ratio(r), 3),
                "goal_ratio": r.goal,
                "pass": pass(r),
            })
        })
        .collect();
    let report = json!({
        "mode": "instructions",
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "git_commit": crate::git_commit(),
        "machine": crate::machine(crate::procs::load_average()),
        "valgrind": valgrind,
        "crmchat_bin": crmchat,
        "bare_instructions_per_request": round(bare, 0),
        "goals_pass": goals_pass,
        "portal": { "chats": chats, "members_per_chat": args.members, "employees": args.users,
                    "memberships": memberships },
        "settings": { "n1": n1, "n2": n2, "reps": reps, "conns": CONNS, "warmup_requests": WARMUP_REQUESTS,
                      "journal_fill": JOURNAL_FILL, "seed": args.seed, "server_log": args.server_log },
        "workloads": workloads,
        "total_s": round(total_s, 1),
    });
    let report_path = out_dir.join("instructions.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("report: {}", report_path.display());
    Ok(ExitCode::SUCCESS)
}

fn valgrind_version() -> anyhow::Result<String> {
    let out = Command::new("valgrind").arg("--version").output().context("running valgrind --version: installed?")?;
    anyhow::ensure!(out.status.success(), "valgrind --version failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A server under `valgrind --tool=callgrind`, its dumps in `DIR/callgrind.out.NAME.PID[.N]`.
struct Callgrind {
    server: Server,
    dir: PathBuf,
    /// The file name of its dumps up to the dump number: `callgrind.out.NAME.PID`.
    prefix: String,
}

impl Callgrind {
    fn start(
        name: &'static str,
        program: &Path,
        args: &[OsString],
        dir: &Path,
        log: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new("valgrind");
        cmd.arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}/callgrind.out.{name}.%p", dir.display()))
            .arg(program)
            .args(args);
        if let Some(filter) = log {
            cmd.env("CRMCHAT_LOG", filter);
        }
        // Valgrind replaces itself with the tool in the same process: the pid is the server's.
        let server = Server::start(name, cmd, &dir.join(format!("{name}.log")))?;
        let prefix = format!("callgrind.out.{name}.{}", server.pid());
        println!("{name} under callgrind on {} (pid {})", server.addr, server.pid());
        Ok(Self { server, dir: dir.to_path_buf(), prefix })
    }

    fn control(&self, flag: &str) -> anyhow::Result<()> {
        // It talks to the process through vgdb, which says what it sends on standard error: shown on failure only.
        let out = Command::new("callgrind_control")
            .args([flag, &self.server.pid().to_string()])
            .stdin(Stdio::null())
            .output()
            .context("running callgrind_control")?;
        anyhow::ensure!(
            out.status.success(),
            "callgrind_control {flag} {} failed ({}): {}{}",
            self.server.pid(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Dump the counters; the instructions since they were last zeroed (or dumped).
    fn dump(&self) -> anyhow::Result<u64> {
        let before = self.dumps()?;
        self.control("-d")?;
        let new: Vec<PathBuf> = self.dumps()?.into_iter().filter(|p| !before.contains(p)).collect();
        let [file] = new.as_slice() else { bail!("callgrind_control -d wrote {} files, not one: {new:?}", new.len()) };
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        total_of(&text).with_context(|| format!("no summary or totals line in {}", file.display()))
    }

    fn dumps(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.strip_prefix(&self.prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('.')) {
                found.push(path);
            }
        }
        Ok(found)
    }

    fn stop(self) -> anyhow::Result<()> {
        // Under valgrind the shutdown, and the final dump, take a while.
        self.server.stop(Duration::from_secs(60))
    }
}

/// The first event's total (instructions) of a callgrind dump: its `summary:` or `totals:` line.
fn total_of(text: &str) -> Option<u64> {
    let line = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next());
    line("summary:").or_else(|| line("totals:"))?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn total_of_reads_summary_or_totals() {
        assert_eq!(super::total_of("events: Ir\nfn=x\n1 2\nsummary: 12345\n"), Some(12345));
        assert_eq!(super::total_of("events: Ir Dr\ntotals: 99 7\n"), Some(99));
        assert_eq!(super::total_of("events: Ir\n"), None);
    }
}
