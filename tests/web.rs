//! actix-web on a pre-forked pool: `hello_prefork` driven by a real HTTP
//! client under load while its workers recycle, its status page in all three
//! formats, and a graceful shutdown with a request in flight.

#![cfg(feature = "web")]

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use support::{DEADLINE, Daemon, run_failing, wait_until};

/// Requests per client thread.
const PER_THREAD: usize = 200;
/// Client threads.
const THREADS: usize = 3;
/// Every this many requests, a client asks for a slow (long) one.
const SLOW_EVERY: usize = 25;

fn agent(keep_alive: bool) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false);
    if !keep_alive {
        config = config.max_idle_connections(0);
    }
    config.build().new_agent()
}

/// GET `path`: (status, body), or the client's error.
fn get(agent: &ureq::Agent, port: u16, path: &str) -> Result<(u16, String), String> {
    let mut response = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .map_err(|err| format!("GET {path}: {err}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|err| format!("GET {path}: body: {err}"))?;
    Ok((status, body))
}

/// GET `path`, which must answer 200.
fn get_ok(d: &Daemon, path: &str) -> String {
    match get(&agent(false), d.port, path) {
        Ok((200, body)) => body,
        other => panic!("GET {path}: {other:?}\n{}", d.report()),
    }
}

/// The value of an unlabelled Prometheus sample.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in\n{text}"))
}

/// Fails with every failure recorded and the daemon's report.
fn assert_none_failed(failures: &Mutex<Vec<String>>, d: &Daemon) {
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} requests failed: {failures:#?}\n{}",
        failures.len(),
        d.report()
    );
}

fn json_status(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&get_ok(d, "/status?json")).expect("status JSON")
}

#[test]
fn load_while_workers_recycle_loses_no_request_and_the_status_page_tells_it() {
    load_while_recycling(1);
}

#[test]
fn workers_of_two_threads_recycle_under_load_without_losing_a_request() {
    // Each thread accepts and serves on its own: the per-process request
    // count, the quota and the drain must hold across both.
    load_while_recycling(2);
}

/// Load from three clients while workers of `threads` actix-web threads
/// recycle every 50 requests; then the status page in all three formats
/// and a clean shutdown.
fn load_while_recycling(threads: usize) {
    let threads = threads.to_string();
    let d = Daemon::start(
        "hello_prefork",
        &[
            "--requests",
            "50",
            "--start-children",
            "2",
            "--max-children",
            "6",
            "--keep-alive",
            "2",
            "--threads",
            &threads,
        ],
    );
    d.wait_workers(2);

    // Three clients: two keep their connection alive, one opens a new
    // connection for every request. Every answer must be a worker's pid.
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let pids = Arc::new(Mutex::new(BTreeSet::<u32>::new()));
    let port = d.port;
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let failures = failures.clone();
            let pids = pids.clone();
            thread::spawn(move || {
                let agent = agent(t != 2);
                for i in 0..PER_THREAD {
                    let slow = i % SLOW_EVERY == SLOW_EVERY - 1;
                    let path = if slow { "/slow?ms=100" } else { "/pid" };
                    match get(&agent, port, path) {
                        Ok((200, body)) if slow => {
                            if body != "slept 100 ms\n" {
                                failures.lock().unwrap().push(format!("{path}: {body:?}"));
                            }
                        }
                        Ok((200, body)) => match body.trim().parse::<u32>() {
                            Ok(pid) => {
                                pids.lock().unwrap().insert(pid);
                            }
                            Err(_) => failures.lock().unwrap().push(format!("{path}: {body:?}")),
                        },
                        Ok((status, body)) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {status} {body:?}")),
                        Err(err) => failures.lock().unwrap().push(err),
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    assert_none_failed(&failures, &d);
    let pids = pids.lock().unwrap().clone();
    let sent = (THREADS * PER_THREAD) as f64;
    // 50 requests each: at least 600 / 50 workers served the load.
    assert!(
        pids.len() >= 6,
        "workers were not recycled: {pids:?}\n{}",
        d.report()
    );

    // Once the load is over, no worker stays busy: nothing leaked an
    // in-flight request (the worker answering the status is busy with it).
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(DEADLINE, || {
            last = json_status(&d);
            let me = last["pid"].as_i64();
            last["slots"].as_array().unwrap().iter().all(|s| {
                s["pid"].as_i64() == me
                    || !matches!(s["state"].as_str(), Some("req") | Some("long"))
            })
        }),
        "a worker stayed busy: {last:#}"
    );
    // Every request reaches the counter: a retiring worker (`e`, so not
    // busy above) counts the last ones it answered as it exits.
    assert!(
        wait_until(DEADLINE, || {
            last = json_status(&d);
            last["counters"]["requests"].as_f64().unwrap() >= sent
        }),
        "requests not all counted: {last:#}"
    );

    // JSON: the report's own fields, counters kept across recycling.
    let json = json_status(&d);
    assert_eq!(json["mode"], "Pre-forking server");
    assert_eq!(json["role"], "worker");
    assert_eq!(json["limits"]["requests"], 50);
    assert_eq!(json["limits"]["max_children"], 6);
    assert_eq!(json["slots"].as_array().unwrap().len(), 6);
    let counters = &json["counters"];
    let requests = counters["requests"].as_f64().unwrap();
    let retired = counters["retired"].as_u64().unwrap();
    let spawned = counters["spawned"].as_u64().unwrap();
    assert!(
        retired >= 6 && spawned >= 8,
        "recycling not counted: {json:#}"
    );
    // Every request is counted, those a retiring worker still answers on
    // its keep-alive connections too; the status requests of this test add
    // a few.
    assert!(
        requests >= sent && requests <= sent + 50.0,
        "{requests} requests counted for {sent} sent: {json:#}"
    );
    // One client opened a connection per request, two kept theirs alive
    // (reconnecting when a retiring worker closed it).
    let connections = counters["connections"].as_f64().unwrap();
    assert!(
        connections >= (PER_THREAD + 2) as f64 && connections <= requests,
        "{connections} connections counted: {json:#}"
    );
    eprintln!(
        "sent {sent}, counted {requests}, retired {retired}, spawned {spawned}, {} worker pids",
        pids.len()
    );
    let workers: Vec<_> = json["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pid"].as_i64() != Some(0))
        .collect();
    assert!(!workers.is_empty(), "{json:#}");
    for w in &workers {
        assert!(w["requests"].as_u64().unwrap() <= 50, "{w}");
        assert!(w["in_state_ms"].is_u64(), "{w}");
    }

    // Text: the report for people.
    let text = get_ok(&d, "/status");
    for needle in [
        "Pre-forking server, we are a child",
        "50 requests per child",
        "Slots [",
        "Requests ",
        ", connections ",
        "retired ",
        "s in state",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }

    // Prometheus: totals, per-worker series, every sample a number.
    let prom = get_ok(&d, "/status?prometheus");
    let total = sample(&prom, "actix_daemon_requests_total");
    assert!(
        total >= requests,
        "counters went back: {total} < {requests}"
    );
    assert!(sample(&prom, "actix_daemon_workers_retired_total") >= retired as f64);
    assert!(sample(&prom, "actix_daemon_connections_total") >= connections);
    assert!(sample(&prom, "actix_daemon_workers_spawned_total") >= spawned as f64);
    assert_eq!(sample(&prom, "actix_daemon_requests_per_worker"), 50.0);
    assert_eq!(sample(&prom, "actix_daemon_degraded"), 0.0);
    assert!(
        prom.lines()
            .any(|l| l.starts_with("actix_daemon_workers{state=\"idle\"} ")),
        "{prom}"
    );
    for series in [
        "actix_daemon_worker_state{slot=",
        "actix_daemon_worker_requests_total{slot=",
        "actix_daemon_worker_state_seconds{slot=",
    ] {
        assert!(
            prom.lines().any(|l| l.starts_with(series)),
            "no {series} in\n{prom}"
        );
    }
    for line in prom.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').expect("sample line");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }

    d.signal(Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
    assert!(
        wait_until(DEADLINE, || d.pids().is_empty()),
        "processes left: {:?}",
        d.pids()
    );
}

#[test]
fn shutdown_finishes_a_long_request_in_flight() {
    // max_spare 2: no surplus-spare retirement racing the slow request
    // (a spare retired just as it accepted shows `e`, not `l`).
    let d = Daemon::start(
        "hello_prefork",
        &[
            "--start-children",
            "1",
            "--max-children",
            "2",
            "--max-spare",
            "2",
        ],
    );
    d.wait_workers(1);
    let port = d.port;
    let slow = thread::spawn(move || get(&agent(true), port, "/slow?ms=1500"));
    // The worker serving it shows `l`.
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(DEADLINE, || {
            last = json_status(&d);
            last["slots"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["state"] == "long")
        }),
        "no long request on the scoreboard: {last:#}"
    );
    d.signal(Signal::SIGTERM);
    let answer = slow.join().expect("client thread");
    assert_eq!(
        answer,
        Ok((200, "slept 1500 ms\n".to_owned())),
        "{}",
        d.report()
    );
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
    assert!(
        wait_until(DEADLINE, || d.pids().is_empty()),
        "processes left: {:?}",
        d.pids()
    );
}

#[test]
fn reloads_under_http_load_lose_no_request() {
    // SIGUSR1 replaces every worker while clients keep sending requests,
    // on keep-alive connections and on a new connection per request: each
    // retiring worker stops accepting, finishes what it accepted, closes
    // its keep-alive connections after their current response, and the
    // others (old or new) take the rest from the shared listener.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let d = Daemon::start(
        "hello_prefork",
        &[
            "--start-children",
            "2",
            "--max-children",
            "4",
            "--keep-alive",
            "2",
        ],
    );
    let first: BTreeSet<i32> = d.wait_workers(2).into_iter().collect();
    let port = d.port;
    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (done, served, failures) = (done.clone(), served.clone(), failures.clone());
            thread::spawn(move || {
                let agent = agent(t != 0);
                while !done.load(Ordering::Relaxed) {
                    match get(&agent, port, "/pid") {
                        Ok((200, body)) if body.trim().parse::<u32>().is_ok() => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    let stop = support::StopOnDrop(done.clone());
    // 20 reloads, each once the clients have been served 50 more times.
    d.reload_while_serving(&served, 20, 50);
    drop(stop);
    for c in clients {
        c.join().expect("client thread");
    }
    assert_none_failed(&failures, &d);
    // The first workers were replaced.
    assert!(
        wait_until(DEADLINE, || d
            .workers()
            .iter()
            .all(|pid| !first.contains(pid))),
        "a worker from before the reloads is still there: {:?} of {first:?}\n{}",
        d.workers(),
        d.report()
    );
    eprintln!(
        "{} requests over 20 reloads",
        served.load(Ordering::Relaxed)
    );
    d.signal(Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
}

#[test]
fn bad_flags_exit_2_before_anything_starts() {
    for args in [
        &["--threads", "0"][..],
        &["--listen", "nowhere"],
        &["--requests"],
        &["--bogus"],
        &["--start-children", "3", "--max-children", "2"],
    ] {
        let (code, stderr) = run_failing("hello_prefork", args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("hello_prefork: "), "{args:?}: {stderr}");
    }
}
