//! `crmchat-bench`: the benchmark of `bench/README.md`.
//!
//! Generates a portal of N chats × M members, loads it with `crmchat state load`, measures a bare-axum baseline
//! (this binary re-executed as `crmchat-bench baseline`), then crmchat on the `unlimited` plan under six
//! workloads, and compares each to the baseline. Prints a table and writes `target/bench/report.json`. With
//! `--instructions`, counts instructions per request under callgrind instead (`instr`).

mod events;
mod instr;
mod load;
mod portal;
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use load::{Acks, Job, LoadgenSched, Outcome, Spec, WorkList};
use portal::{Partitions, Portal};
use procs::{RssSampler, Server};

#[derive(Debug, Parser)]
#[command(name = "crmchat-bench", about = "Throughput and latency of crmchat against a bare-axum baseline")]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Smaller portal (20,000 chats) and short workloads (1 s warm-up + 3 s each): well under 90 s.
    #[arg(long)]
    quick: bool,
    /// Chats (one deal each); default 50,000, or 20,000 with --quick.
    #[arg(long)]
    chats: Option<usize>,
    /// Members per chat.
    #[arg(long, default_value_t = 20)]
    members: usize,
    /// Employees the members are drawn from.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Warm-up before each measured window, in seconds; default 2, or 1 with --quick.
    #[arg(long)]
    warmup: Option<f64>,
    /// Measured window of each workload, in seconds; default 10, or 3 with --quick.
    #[arg(long)]
    duration: Option<f64>,
    /// Seed of the generated portal and of the uniform shuffle.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Log filter for the server (CRMCHAT_LOG); default: the server's own default.
    #[arg(long)]
    server_log: Option<String>,
    /// Output directory; default `target/bench` (next to the directory of this executable).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scheduling policy of the load generator's threads: `batch` (the default) or `normal`. See bench/README.md.
    #[arg(long, value_enum, default_value_t = LoadgenSched::Batch)]
    loadgen_sched: LoadgenSched,
    /// Instead of the throughput workloads: instructions per request under callgrind, crmchat against the bare
    /// server (see "Instructions per request" in bench/README.md). The portal defaults to 500 chats.
    #[arg(long)]
    instructions: bool,
    /// With --instructions: requests of the first of the two measured runs of each workload.
    #[arg(long, default_value_t = 300)]
    n1: u64,
    /// With --instructions: requests of the second run; the cost per request is the difference over N2 - N1.
    #[arg(long, default_value_t = 900)]
    n2: u64,
    /// With --instructions: how many times each workload's pair of runs is repeated (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: u64,
    /// The crmchat binary to measure, instead of building the one of the bench's own profile.
    #[arg(long, value_name = "PATH")]
    crmchat_bin: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// The bare-axum baseline server (started by the benchmark itself).
    #[command(hide = true)]
    Baseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: std::net::SocketAddr,
    },
}

/// The delete workloads' partitions are sized for this rate over warm-up + window, so they cannot run dry
/// below it (as far as the portal is large enough; see `Partitions`).
const MAX_EXPECTED_RPS: f64 = 60_000.0;
const GOAL_RSS_MB: f64 = 150.0;
const GOAL_P99_MS: f64 = 10.0;
/// The bound workload gets chats of its own, added after the portal's N, sized for this rate over warm-up +
/// window (a little above the unbound uniform workload's rate on a 2-core VM).
const BOUND_EXPECTED_RPS: f64 = 32_000.0;
/// The bound workload's goals: removals at least this share of the unbound uniform workload's rate, deliveries
/// at least as fast as removals, and the oldest pending delivery younger than this when the window ends.
const GOAL_BOUND_VS_UNIFORM: f64 = 0.85;
const GOAL_OLDEST_PENDING_S: f64 = 1.0;
/// How long the bench waits after the bound workload for the deliveries still on their way.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Sub::Baseline { addr }) => procs::serve_baseline(addr).map(|()| ExitCode::SUCCESS),
        None if args.instructions => instr::run(&args),
        None => run(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("crmchat-bench: {e:#}");
        ExitCode::FAILURE
    })
}

/// One measured workload.
struct Row {
    key: &'static str,
    title: &'static str,
    conns: usize,
    out: Outcome,
    rss_mb: f64,
    /// Minimum ratio to the bare baseline.
    goal: Option<f64>,
    /// For deletes and the refill: memberships in the workload's list and how many were handed out.
    pool: Option<(usize, usize)>,
    /// When the goal is a ratio to another workload rather than to the bare baseline: its title and req/s.
    vs: Option<(&'static str, f64)>,
}

impl Row {
    /// A list worked through to its end with no goal (the refill): running out of work is how it finishes.
    fn runs_to_end(&self) -> bool {
        self.goal.is_none() && self.pool.is_some()
    }

    fn p(&self, q: f64) -> f64 {
        self.out.hist.value_at_quantile(q) as f64 / 1000.0
    }

    fn ratio(&self, bare_rps: f64) -> f64 {
        if bare_rps > 0.0 { self.out.rps / bare_rps } else { 0.0 }
    }

    fn pass(&self, bare_rps: f64) -> Option<bool> {
        let goal = self.goal?;
        let p99_ok = self.key != "delete_hot_64" || self.p(0.99) <= GOAL_P99_MS;
        let ratio = match self.vs {
            Some((_, rps)) => self.ratio(rps),
            None => self.ratio(bare_rps),
        };
        Some(ratio >= goal && p99_ok && self.out.measured > 0)
    }

    fn goal_text(&self) -> String {
        match (self.goal, self.key) {
            (Some(g), _) if self.vs.is_some() => format!(">= {g:.2} x {}", self.vs.map_or("", |v| v.0)),
            (Some(g), "delete_hot_64") => format!(">= {g:.2}, p99 <= {GOAL_P99_MS} ms"),
            (Some(g), _) => format!(">= {g:.2}"),
            (None, key) if key.starts_with("bare") => "(ceiling)".into(),
            (None, _) => "(no goal)".into(),
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mode = if args.quick { "quick" } else { "full" };
    let chats = args.chats.unwrap_or(if args.quick { 20_000 } else { 50_000 });
    let warmup = Duration::from_secs_f64(args.warmup.unwrap_or(if args.quick { 1.0 } else { 2.0 }));
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(if args.quick { 3.0 } else { 10.0 }));
    // The bound workload's own chats, after the N of the other workloads.
    let bound_chats =
        (BOUND_EXPECTED_RPS * (warmup + duration).as_secs_f64() / args.members.max(1) as f64).ceil() as usize;
    let out_dir = args.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let crmchat = crmchat_binary(&args)?;
    let build_s = started.elapsed().as_secs_f64();
    let memberships = (chats + bound_chats) * args.members;
    let load_at_start = procs::load_average();
    println!(
        "crmchat-bench ({mode}): ({} + {} bound) chats x {} members = {} memberships; {:.0} s warm-up + {:.0} s per workload",
        thousands(chats as u64),
        thousands(bound_chats as u64),
        args.members,
        thousands(memberships as u64),
        warmup.as_secs_f64(),
        duration.as_secs_f64()
    );
    if let Some(load) = load_at_start.filter(|&l| l > 1.0) {
        println!("warning: the machine is busy (load average {load:.1}): other processes compete for the cores");
    }

    // The portal.
    let t = Instant::now();
    let portal = Portal::generate(chats + bound_chats, args.members, args.users, args.seed)?;
    let state_file = out_dir.join("portal.json");
    portal.write_state(&state_file)?;
    let generate_s = t.elapsed().as_secs_f64();
    let state_mb = std::fs::metadata(&state_file)?.len() as f64 / 1e6;
    println!("generated {} ({state_mb:.1} MB) in {generate_s:.1} s", state_file.display());
    let data_dir = out_dir.join("data");
    let t = Instant::now();
    load_state(&crmchat, &state_file, &data_dir, &out_dir.join("load.log"))?;
    let load_s = t.elapsed().as_secs_f64();
    // This runtime only coordinates: database counts and the CPU sampling. The load generator brings its own
    // threads (see `load::run`), so worker threads here would only sit beside it on the same cores.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let db_url = format!("sqlite://{}/crmchat.db", data_dir.display());
    let initial = runtime.block_on(count_memberships(&db_url))?;
    println!(
        "loaded with `crmchat state load` in {load_s:.1} s: {} memberships in the database",
        thousands(initial as u64)
    );
    anyhow::ensure!(initial as usize == memberships, "expected {memberships} memberships after the load");

    // The ceiling: bare axum, same runtime settings, same requests as server.time.
    let mut rows = Vec::new();
    let me = std::env::current_exe()?;
    // Workload `i` goes through webhook `i`, for a warm-up and then a measured window.
    let run_for = |i: usize, server: &Server, conns: usize, job: Job, (warmup, duration): (Duration, Duration)| {
        let spec = Spec {
            addr: server.addr,
            conns,
            warmup,
            duration,
            job,
            webhook_code: portal::webhook_code(i),
            server_pid: server.pid(),
            sched: args.loadgen_sched,
            acks: None,
            requests: None,
        };
        runtime.block_on(load::run(spec))
    };
    let run_one = |i: usize, server: &Server, conns: usize, job: Job| -> anyhow::Result<Outcome> {
        run_for(i, server, conns, job, (warmup, duration))
    };
    // A job that runs until its list is done: no warm-up, and a window longer than any list takes.
    let run_to_end = |i: usize, server: &Server, conns: usize, job: Job| -> anyhow::Result<Outcome> {
        run_for(i, server, conns, job, (Duration::ZERO, Duration::from_secs(3600)))
    };
    // The bare server (this executable as `baseline`), measured as one row.
    let measure_bare = |key: &'static str, title: &'static str| -> anyhow::Result<Row> {
        let mut cmd = Command::new(&me);
        cmd.args(["baseline", "--addr", "127.0.0.1:0"]);
        let baseline = Server::start("baseline", cmd, &out_dir.join("baseline.log"))?;
        let sampler = RssSampler::start(baseline.pid());
        let out = run_one(0, &baseline, 64, Job::ServerTime)?;
        let row = finish_row(key, title, 64, out, sampler.finish(), None, None);
        baseline.stop(Duration::from_secs(5))?;
        Ok(row)
    };
    rows.push(measure_bare("bare_axum", "bare axum (fixed JSON)")?);

    // crmchat.
    let mut cmd = Command::new(&crmchat);
    cmd.args(["serve", "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--data-dir"]).arg(&data_dir);
    if let Some(filter) = &args.server_log {
        cmd.env("CRMCHAT_LOG", filter);
    }
    let server_log = out_dir.join("crmchat.log");
    let server = Server::start("crmchat", cmd, &server_log)?;
    let sampler = RssSampler::start(server.pid());
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss_mb = procs::rss_kb(server.pid()).unwrap_or(0) as f64 / 1024.0;
    println!("crmchat serving on {} (pid {}), RSS {idle_rss_mb:.1} MB idle", server.addr, server.pid());

    let out = run_one(1, &server, 64, Job::ServerTime)?;
    rows.push(finish_row("server_time", "server.time (webhook)", 64, out, sampler.take_max_mb(), Some(0.80), None));
    let out = run_one(2, &server, 64, Job::GetLastId { chats: chats as u32 })?;
    rows.push(finish_row("get_last_id", "crm.chat.getLastId", 64, out, sampler.take_max_mb(), Some(0.60), None));

    let need = (MAX_EXPECTED_RPS * (warmup + duration).as_secs_f64()).ceil() as usize;
    let mut parts = Partitions::new(&portal);
    let bound = parts.tail(bound_chats, args.seed + 1);
    // The hot set: chats from the front, in id order, removed by both hot workloads. Three workloads of fixed
    // length at tens of thousands of removals a second need more than 1,000,000 memberships, so between the
    // two the members the first removed are added back (`user.add`, a row of its own, no goal), and the second
    // finds the same chats full again. The uniform workload gets the chats after the hot set.
    let hot = parts.hot(need.min(parts.remaining() * 3 / 5));
    let hot_64 = Arc::new(WorkList::new(hot.clone()));
    let out = run_one(3, &server, 64, Job::Delete(hot_64.clone()))?;
    let mut deletes_ok = out.ok_total;
    let pool = Some((hot_64.len(), hot_64.used()));
    rows.push(finish_row("delete_hot_64", "user.delete hot set", 64, out, sampler.take_max_mb(), Some(0.30), pool));

    let refill = Arc::new(WorkList::new(hot[..hot_64.used()].to_vec()));
    let out = run_to_end(4, &server, 256, Job::Add(refill.clone()))?;
    let adds_ok = out.ok_total;
    let pool = Some((refill.len(), refill.used()));
    rows.push(finish_row("refill_add", "user.add (refill)", 256, out, sampler.take_max_mb(), None, pool));

    let hot_256 = Arc::new(WorkList::new(hot));
    let out = run_one(5, &server, 256, Job::Delete(hot_256.clone()))?;
    deletes_ok += out.ok_total;
    let pool = Some((hot_256.len(), hot_256.used()));
    rows.push(finish_row("delete_hot_256", "user.delete hot set", 256, out, sampler.take_max_mb(), Some(0.40), pool));
    parts.consume(hot_64.used().max(hot_256.used()));

    let uniform = Arc::new(WorkList::new(parts.uniform(args.seed)));
    let out = run_one(6, &server, 64, Job::Delete(uniform.clone()))?;
    deletes_ok += out.ok_total;
    let pool = Some((uniform.len(), uniform.used()));
    rows.push(finish_row("delete_uniform", "user.delete uniform", 64, out, sampler.take_max_mb(), Some(0.12), pool));

    // The same removals with one handler bound to their event, over chats of their own, through webhook 7: the
    // handler is bound (`event.bind`, with an OAuth token of the bench's application) right before and unbound
    // right after, so that the other workloads produce no events.
    let uniform_rps = rows.last().map_or(0.0, |r| r.out.rps);
    let bound = Arc::new(WorkList::new(bound));
    let epoch = Instant::now();
    let acks = Arc::new(Acks::new(epoch, bound.len()));
    let sink = events::Sink::start(bound.items(), epoch, args.loadgen_sched)?;
    let token = runtime.block_on(events::access_token(&crmchat, &data_dir, server.addr))?;
    runtime.block_on(events::bind(server.addr, &token, &sink.url, false))?;
    let spec = Spec {
        addr: server.addr,
        conns: 64,
        warmup,
        duration,
        job: Job::Delete(bound.clone()),
        webhook_code: portal::webhook_code(7),
        server_pid: server.pid(),
        sched: args.loadgen_sched,
        acks: Some(acks.clone()),
        requests: None,
    };
    let window_end = tokio::time::Instant::now() + warmup + duration;
    let (out, pending) =
        runtime.block_on(async { tokio::join!(load::run(spec), events::pending_at(&db_url, window_end)) });
    let (out, pending) = (out?, pending?);
    let drained_in = runtime.block_on(events::drain(&sink, out.ok_total, DRAIN_LIMIT));
    runtime.block_on(events::bind(server.addr, &token, &sink.url, true))?;
    let measure_start = out.base + warmup;
    let window = (measure_start, measure_start + Duration::from_secs_f64(out.window_s));
    let deliveries = sink.figures(&acks, window);
    sink.stop();
    deletes_ok += out.ok_total;
    let pool = Some((bound.len(), bound.used()));
    let mut bound_row = finish_row(
        "delete_uniform_bound",
        "user.delete uniform+evt",
        64,
        out,
        sampler.take_max_mb(),
        Some(GOAL_BOUND_VS_UNIFORM),
        pool,
    );
    bound_row.vs = Some(("uniform", uniform_rps));
    let bound_events = Bound {
        deliveries,
        pending,
        drained_in,
        removals_rps: bound_row.out.rps,
        acknowledged: bound_row.out.ok_total,
    };
    rows.push(bound_row);
    let rss_mb = sampler.finish();
    server.stop(Duration::from_secs(40))?;

    // The ceiling again, last: the speed of a shared machine drifts over minutes (runs here saw the bare
    // server anywhere from 100k to 140k req/s), so every ratio is to the mean of a measurement before and
    // one after the workloads rather than to whichever one happened to come first.
    rows.push(measure_bare("bare_axum_end", "bare axum, again at end")?);

    // Every successful removal must be gone from the database, and nothing else.
    let remaining = runtime.block_on(count_memberships(&db_url))?;
    let removed = initial - remaining;
    let consistent = removed == deletes_ok as i64 - adds_ok as i64;
    let request_errors: u64 = rows.iter().map(|r| r.out.errors).sum();
    let errors = request_errors + u64::from(!consistent);
    let bare_start_rps = rows[0].out.rps;
    let bare_end_rps = rows.last().map_or(bare_start_rps, |r| r.out.rps);
    let bare_rps = (bare_start_rps + bare_end_rps) / 2.0;

    print_table(&rows, bare_rps);
    println!(
        "ceiling: {} req/s, the mean of the bare server first ({}) and last ({})",
        thousands(bare_rps.round() as u64),
        thousands(bare_start_rps.round() as u64),
        thousands(bare_end_rps.round() as u64)
    );
    let rss_pass = rss_mb <= GOAL_RSS_MB;
    bound_events.print();
    println!(
        "server RSS: {idle_rss_mb:.1} MB idle after start, {rss_mb:.1} MB max with {} memberships loaded   goal <= {GOAL_RSS_MB} MB   {}",
        thousands(initial as u64),
        verdict(rss_pass)
    );
    println!(
        "memberships: {} before, {} after: {} fewer = {} successful user.delete less {} successful user.add answers   {}",
        thousands(initial as u64),
        thousands(remaining as u64),
        thousands(removed as u64),
        thousands(deletes_ok),
        thousands(adds_ok),
        if consistent { "consistent" } else { "MISMATCH (counted as an error)" }
    );
    if args.quick {
        println!(
            "note: --quick: the uniform workload runs over a portal of {} memberships, not 1,000,000 (and the bound \
             workload's chats, {} more)",
            thousands((chats * args.members) as u64),
            thousands((bound_chats * args.members) as u64)
        );
    }
    let busiest = rows.iter().map(|r| r.out.other_cpu_pct).fold(0.0, f64::max);
    if busiest > 20.0 {
        println!("warning: other processes used up to {busiest:.0}% CPU during a workload: the figures are disturbed");
    }
    let total_s = started.elapsed().as_secs_f64();
    println!(
        "errors: {errors}; took {total_s:.0} s in all (build {build_s:.0} s, load {load_s:.1} s); server log: {}",
        server_log.display()
    );

    let row = |key: &str| rows.iter().find(|r| r.key == key).expect("every workload ran");
    let goals_pass =
        rows.iter().filter_map(|r| r.pass(bare_rps)).all(|p| p) && rss_pass && bound_events.passes().iter().all(|p| *p);
    let report = json!({
        "mode": mode,
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "git_commit": git_commit(),
        "machine": machine(load_at_start),
        "bare_rps": round(bare_rps, 0),
        "bare_rps_start": round(bare_start_rps, 0),
        "bare_rps_end": round(bare_end_rps, 0),
        "server_time_rps": round(row("server_time").out.rps, 0),
        "get_last_id_rps": round(row("get_last_id").out.rps, 0),
        "delete_hot_64_rps": round(row("delete_hot_64").out.rps, 0),
        "delete_hot_64_p99_ms": round(row("delete_hot_64").p(0.99), 3),
        "delete_hot_256_rps": round(row("delete_hot_256").out.rps, 0),
        "delete_uniform_rps": round(row("delete_uniform").out.rps, 0),
        "delete_uniform_bound_rps": round(row("delete_uniform_bound").out.rps, 0),
        "delete_uniform_bound_ratio_to_uniform": round(row("delete_uniform_bound").ratio(uniform_rps), 3),
        "events": bound_events.json(),
        "rss_mb": round(rss_mb, 1),
        "rss_idle_mb": round(idle_rss_mb, 1),
        "errors": errors,
        // Every successful removal, checked against the database: the memberships it holds fewer, plus those
        // added back between the hot workloads.
        "memberships_removed": deletes_ok,
        "memberships_check": {
            "initial": initial, "remaining": remaining, "net_removed": removed,
            "successful_deletes": deletes_ok, "successful_refill_adds": adds_ok, "consistent": consistent,
        },
        "goals_pass": goals_pass,
        "portal": {
            "chats": chats, "members_per_chat": args.members, "employees": args.users, "memberships": initial,
            "state_file_mb": round(state_mb, 1), "generate_s": round(generate_s, 2), "load_s": round(load_s, 2),
            "build_s": round(build_s, 1),
        },
        "settings": {
            "warmup_s": warmup.as_secs_f64(), "duration_s": duration.as_secs_f64(), "seed": args.seed,
            "server_log": args.server_log, "crmchat_bin": args.crmchat_bin,
            "loadgen_sched": clap::ValueEnum::to_possible_value(&args.loadgen_sched).map(|v| v.get_name().to_string()),
        },
        "workloads": rows.iter().map(|r| row_json(r, bare_rps)).collect::<Vec<_>>(),
        "total_s": round(total_s, 1),
    });
    let report_path = out_dir.join("report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("report: {}", report_path.display());
    // Goals are reported, not enforced; an invalid run (errors, inconsistent database) fails.
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn finish_row(
    key: &'static str,
    title: &'static str,
    conns: usize,
    out: Outcome,
    rss_mb: f64,
    goal: Option<f64>,
    pool: Option<(usize, usize)>,
) -> Row {
    let row = Row { key, title, conns, out, rss_mb, goal, pool, vs: None };
    let o = &row.out;
    println!(
        "  {:<24} {:>3} conns: {:>9} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  CPU: server {:.0}%, loadgen {:.0}%, other {:.0}%",
        row.title,
        conns,
        thousands(o.rps.round() as u64),
        row.p(0.50),
        row.p(0.99),
        o.errors,
        o.server_cpu_pct,
        o.loadgen_cpu_pct,
        o.other_cpu_pct
    );
    for e in &o.first_errors {
        println!("      error: {e}");
    }
    if row.runs_to_end() {
        let (size, _) = row.pool.unwrap_or_default();
        println!("      added back {} memberships in {:.1} s", thousands(size as u64), o.window_s);
    } else if let Some(at) = o.ran_dry_at {
        let (size, _) = row.pool.unwrap_or_default();
        println!(
            "      ran out of work {:.1} s into the measured window ({} memberships in its partition); measured over {:.1} s",
            at,
            thousands(size as u64),
            o.window_s
        );
    }
    row
}

fn print_table(rows: &[Row], bare_rps: f64) {
    println!();
    println!(
        "{:<24} {:>5} {:>9} {:>8} {:>8} {:>8} {:>6} {:>5} {:>6} {:>7} {:>6}  {:<22} pass",
        "workload",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "cpu%",
        "other%",
        "rss MB",
        "ratio",
        "goal"
    );
    for r in rows {
        let pass = match r.pass(bare_rps) {
            Some(p) => verdict(p).to_string(),
            None => "-".into(),
        };
        let dry = if r.out.ran_dry_at.is_some() && !r.runs_to_end() { " (ran dry)" } else { "" };
        println!(
            "{:<24} {:>5} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>5.0} {:>6.0} {:>7.1} {:>6.2}  {:<22} {pass}{dry}",
            r.title,
            r.conns,
            thousands(r.out.rps.round() as u64),
            r.p(0.50),
            r.p(0.99),
            r.p(0.999),
            r.out.errors,
            r.out.server_cpu_pct,
            r.out.other_cpu_pct,
            r.rss_mb,
            r.ratio(bare_rps),
            r.goal_text()
        );
    }
    println!();
}

fn row_json(r: &Row, bare_rps: f64) -> Value {
    let o = &r.out;
    json!({
        "key": r.key,
        "workload": r.title,
        "conns": r.conns,
        "requests_measured": o.measured,
        "window_s": round(o.window_s, 3),
        "rps": round(o.rps, 0),
        "p50_ms": round(r.p(0.50), 3),
        "p99_ms": round(r.p(0.99), 3),
        "p999_ms": round(r.p(0.999), 3),
        "max_ms": round(o.hist.max() as f64 / 1000.0, 3),
        "mean_ms": round(o.hist.mean() / 1000.0, 3),
        "errors": o.errors,
        "first_errors": o.first_errors,
        "successful_total": o.ok_total,
        "server_cpu_pct": round(o.server_cpu_pct, 1),
        "loadgen_cpu_pct": round(o.loadgen_cpu_pct, 1),
        "other_cpu_pct": round(o.other_cpu_pct, 1),
        "server_rss_max_mb": round(r.rss_mb, 1),
        "ratio_to_bare": round(r.ratio(bare_rps), 3),
        "goal_ratio": r.goal,
        // A goal that is a ratio to another workload's req/s (the bound workload's, to the unbound uniform one).
        "goal_relative_to": r.vs.map(|v| v.0),
        "ratio_to_goal_base": r.vs.map(|v| round(r.ratio(v.1), 3)),
        "pass": r.pass(bare_rps),
        "partition_size": r.pool.map(|p| p.0),
        "partition_used": r.pool.map(|p| p.1),
        "ran_dry_at_s": o.ran_dry_at.map(|s| round(s, 2)),
    })
}

/// What the bound workload's handler received.
struct Bound {
    deliveries: events::Deliveries,
    pending: events::Pending,
    drained_in: Duration,
    removals_rps: f64,
    acknowledged: u64,
}

impl Bound {
    /// Deliveries at least as fast as removals; the oldest pending delivery younger than the goal.
    fn passes(&self) -> [bool; 2] {
        [
            self.deliveries.rps >= self.removals_rps && self.deliveries.rps > 0.0,
            self.pending.oldest_s < GOAL_OLDEST_PENDING_S,
        ]
    }

    fn print(&self) {
        let d = &self.deliveries;
        let [rate_pass, pending_pass] = self.passes();
        println!(
            "events ({} bound to the uniform+evt removals): {} deliveries/s in the window, removals {} req/s   goal >= removals   {}",
            events::EVENT,
            thousands(d.rps.round() as u64),
            thousands(self.removals_rps.round() as u64),
            verdict(rate_pass)
        );
        println!(
            "  oldest pending delivery at the window's end: {:.3} s ({} pending)   goal < {GOAL_OLDEST_PENDING_S} s   {}",
            self.pending.oldest_s,
            thousands(self.pending.count.max(0) as u64),
            verdict(pending_pass)
        );
        println!(
            "  received {} of {} acknowledged removals' events after {:.1} s of draining{}; {} duplicates, {} unmatched",
            thousands(d.unique),
            thousands(self.acknowledged),
            self.drained_in.as_secs_f64(),
            if d.unique < self.acknowledged { " (gave up: still missing)" } else { "" },
            thousands(d.duplicates),
            thousands(d.unmatched),
        );
        println!(
            "  lag, receipt less the removal's answer: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} arrived before the answer was read)",
            d.lag_ms(0.50),
            d.lag_ms(0.99),
            d.lag.max() as f64 / 1000.0,
            thousands(d.before_ack)
        );
    }

    fn json(&self) -> Value {
        let d = &self.deliveries;
        let [rate_pass, pending_pass] = self.passes();
        json!({
            "event": events::EVENT,
            "workload": "delete_uniform_bound",
            "deliveries_rps": round(d.rps, 0),
            "deliveries_in_window": d.in_window,
            "removals_rps": round(self.removals_rps, 0),
            "removals_acknowledged": self.acknowledged,
            "deliveries_received": d.unique,
            "posts": d.posts,
            "duplicates": d.duplicates,
            "unmatched": d.unmatched,
            "drain_s": round(self.drained_in.as_secs_f64(), 3),
            "pending_at_window_end": self.pending.count,
            "oldest_pending_s": round(self.pending.oldest_s, 3),
            "lag_p50_ms": round(d.lag_ms(0.50), 3),
            "lag_p99_ms": round(d.lag_ms(0.99), 3),
            "lag_max_ms": round(d.lag.max() as f64 / 1000.0, 3),
            "arrived_before_answer": d.before_ack,
            "goal_deliveries_rps_at_least_removals": rate_pass,
            "goal_oldest_pending_s": GOAL_OLDEST_PENDING_S,
            "oldest_pending_pass": pending_pass,
        })
    }
}

/// The server to measure: `--crmchat-bin`, or the one of the bench's profile, built first.
fn crmchat_binary(args: &Args) -> anyhow::Result<PathBuf> {
    match &args.crmchat_bin {
        Some(path) => {
            anyhow::ensure!(path.is_file(), "--crmchat-bin {}: no such file", path.display());
            Ok(std::path::absolute(path)?)
        }
        None => procs::crmchat_binary(),
    }
}

/// `crmchat state load STATE --data-dir DATA` into a fresh DATA (removed first), its output in `log`.
fn load_state(crmchat: &Path, state_file: &Path, data_dir: &Path, log: &Path) -> anyhow::Result<()> {
    if data_dir.exists() {
        std::fs::remove_dir_all(data_dir).with_context(|| format!("removing {}", data_dir.display()))?;
    }
    let status = Command::new(crmchat)
        .arg("state")
        .arg("load")
        .arg(state_file)
        .arg("--data-dir")
        .arg(data_dir)
        .stderr(std::fs::File::create(log)?)
        .status()
        .context("running crmchat state load")?;
    anyhow::ensure!(status.success(), "crmchat state load failed ({status}); see {}", log.display());
    Ok(())
}

async fn count_memberships(url: &str) -> anyhow::Result<i64> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(url).await.with_context(|| format!("opening {url}"))?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chat_members").fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(n)
}

/// `target/bench`: `target/release/crmchat-bench` → `target/bench`.
fn default_out_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("bench")))
        .unwrap_or_else(|| Path::new("target").join("bench"))
}

fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").current_dir(env!("CARGO_MANIFEST_DIR")).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{commit}-dirty") } else { commit })
}

fn machine(load_at_start: Option<f64>) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")?.split(':').nth(1)).map(str::trim);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "load_average_at_start": load_at_start,
    })
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
