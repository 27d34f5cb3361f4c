//! What `preforking.rs` and `forking.rs` share: the command line, the line
//! protocol of `../shared/EXAMPLES-PROTOCOL.md`, and the application actors.
//!
//! The same code runs either mode. In fork per request, the supervisor's
//! `Acceptor` accepts connections and hands each to the daemon with
//! `UpdateStatus::Req`; the worker's `ChildActor` gets it back in
//! `DaemonSignal::Child(Some(payload))`. In a pre-forked pool, each worker's
//! `ChildActor` accepts on the inherited listener, one connection at a time,
//! whenever the daemon says `Accept`.

use std::io::Write;
use std::net::TcpListener as StdListener;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use actix_daemon::{
    Daemon, DaemonActor, DaemonSignal, Payload, Peek, Process, Status, Subscribe, UpdateStatus,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Defaults of one example.
pub struct Defaults {
    pub name: &'static str,
    pub start_children: Option<usize>,
    pub min_spare: Option<usize>,
    pub max_children: Option<usize>,
    pub requests: Option<u64>,
}

/// The parsed command line.
#[derive(Debug)]
pub struct Args {
    pub port: u16,
    pub foreground: bool,
    pub logfile: PathBuf,
    pub start_children: Option<usize>,
    pub min_spare: Option<usize>,
    pub max_spare: Option<usize>,
    pub max_children: Option<usize>,
    pub requests: Option<u64>,
    pub requests_jitter: Option<u64>,
    pub warm_workers: Option<usize>,
    pub babysit: Option<u64>,
    pub shutdown_timeout: Option<u64>,
    pub workdir: Option<PathBuf>,
    pub ignore_pause: bool,
    pub request_timeout: Option<u64>,
    pub long_request_timeout: Option<u64>,
    /// `--max-rss`, converted from MiB to bytes.
    pub max_rss: Option<u64>,
    pub cpu_limit: Option<u64>,
    pub cpu_share: Option<u64>,
    pub max_restarts: Option<u32>,
    pub restart_window: u64,
    pub fault_commands: bool,
    pub panic_at_start: Option<u64>,
    pub foreign_child: Option<String>,
    /// `--worker-foreign-child CMD`: each worker starts `sh -c CMD`.
    pub worker_foreign_child: Option<String>,
    /// `--keep-fd N` (repeatable): descriptors the daemon must keep open.
    pub keep_fds: Vec<i32>,
    pub pidfile: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub privileges_all: bool,
    pub binary_upgrade: bool,
    pub fault_fail_upgrade: bool,
    /// `--fault-slow-upgrade MS`: as the new binary of an upgrade, wait this
    /// long before starting (a wide window to signal the old one in).
    pub slow_upgrade: Option<u64>,
    /// `--fault-supervisor-panic start|hup`: the application's actor in the
    /// supervisor panics when the daemon starts, or on SIGHUP.
    pub supervisor_panic: Option<String>,
    pub spawn_timeout: Option<u64>,
    /// The flags given on the command line, to name the one behind a
    /// configuration error.
    pub given: Vec<String>,
}

const FLAGS: &str = "[PORT] [--foreground] [--logfile PATH] [--start-children N] [--min-spare N] \
[--max-spare N] [--max-children N] [--requests N (0: unlimited)] [--requests-jitter N] [--warm-workers N] [--babysit SECS] [--shutdown-timeout SECS] \
[--workdir DIR] [--ignore-pause] [--request-timeout SECS] [--long-request-timeout SECS] [--max-rss MIB] \
[--cpu-limit SECS] [--cpu-share PERCENT] [--max-restarts N] [--restart-window SECS] [--fault-commands] \
[--fault-panic-at-start N] [--foreign-child SHELL-COMMAND] [--worker-foreign-child SHELL-COMMAND] [--keep-fd N] [--pidfile PATH] [--user NAME] [--group NAME] \
[--privileges workers|all] [--binary-upgrade] [--fault-fail-upgrade] [--fault-slow-upgrade MS] \
[--fault-supervisor-panic start|hup] [--spawn-timeout SECS]";

fn parse(defaults: &Defaults) -> Result<Args, String> {
    let cwd = std::env::current_dir().map_err(|err| format!("current directory: {err}"))?;
    let mut args = Args {
        port: 0,
        foreground: false,
        logfile: cwd.join(format!("{}.log", defaults.name)),
        start_children: defaults.start_children,
        min_spare: defaults.min_spare,
        max_spare: None,
        max_children: defaults.max_children,
        requests: defaults.requests,
        requests_jitter: None,
        warm_workers: None,
        babysit: None,
        shutdown_timeout: None,
        workdir: None,
        ignore_pause: false,
        request_timeout: None,
        long_request_timeout: None,
        max_rss: None,
        cpu_limit: None,
        cpu_share: None,
        max_restarts: None,
        restart_window: 60,
        fault_commands: false,
        panic_at_start: None,
        foreign_child: None,
        worker_foreign_child: None,
        keep_fds: Vec::new(),
        pidfile: None,
        user: None,
        group: None,
        privileges_all: false,
        binary_upgrade: false,
        fault_fail_upgrade: false,
        slow_upgrade: None,
        supervisor_panic: None,
        spawn_timeout: None,
        given: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let mut port_seen = false;
    while let Some(arg) = it.next() {
        if arg.starts_with("--") {
            args.given.push(arg.clone());
        }
        let mut value = |flag: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a whole number"))
        };
        // Counts are converted without wrapping or truncating; the builder
        // then checks each against its bound (`build` below).
        let mut count = |flag: &str| -> Result<usize, String> {
            let n = value(flag)?;
            usize::try_from(n).map_err(|_| too_large(flag, n, usize::MAX))
        };
        match arg.as_str() {
            "--foreground" => args.foreground = true,
            "--ignore-pause" => args.ignore_pause = true,
            "--workdir" => {
                let v = it.next().ok_or("--workdir needs a value")?;
                args.workdir = Some(cwd.join(v));
            }
            "--logfile" => {
                let v = it.next().ok_or("--logfile needs a value")?;
                args.logfile = cwd.join(v);
            }
            "--start-children" => args.start_children = Some(count(&arg)?),
            "--min-spare" => args.min_spare = Some(count(&arg)?),
            "--max-spare" => args.max_spare = Some(count(&arg)?),
            "--max-children" => args.max_children = Some(count(&arg)?),
            "--requests" => args.requests = Some(value(&arg)?).filter(|&n| n > 0),
            "--requests-jitter" => args.requests_jitter = Some(value(&arg)?),
            "--warm-workers" => args.warm_workers = Some(count(&arg)?),
            "--babysit" => args.babysit = Some(value(&arg)?),
            "--shutdown-timeout" => args.shutdown_timeout = Some(value(&arg)?),
            "--request-timeout" => args.request_timeout = Some(value(&arg)?),
            "--long-request-timeout" => args.long_request_timeout = Some(value(&arg)?),
            "--max-rss" => {
                let mib = value(&arg)?;
                let bytes = mib
                    .checked_mul(1 << 20)
                    .ok_or_else(|| too_large("--max-rss", mib, u64::MAX >> 20))?;
                args.max_rss = Some(bytes);
            }
            "--cpu-limit" => args.cpu_limit = Some(value(&arg)?),
            "--cpu-share" => args.cpu_share = Some(value(&arg)?),
            "--max-restarts" => {
                let n = value(&arg)?;
                let n = u32::try_from(n).map_err(|_| too_large(&arg, n, u32::MAX))?;
                args.max_restarts = Some(n);
            }
            "--restart-window" => args.restart_window = value(&arg)?,
            "--fault-commands" => args.fault_commands = true,
            "--binary-upgrade" => args.binary_upgrade = true,
            "--fault-fail-upgrade" => args.fault_fail_upgrade = true,
            "--fault-slow-upgrade" => args.slow_upgrade = Some(value(&arg)?),
            "--pidfile" => {
                let v = it.next().ok_or("--pidfile needs a value")?;
                args.pidfile = Some(cwd.join(v));
            }
            "--user" => args.user = Some(it.next().ok_or("--user needs a value")?),
            "--group" => args.group = Some(it.next().ok_or("--group needs a value")?),
            "--privileges" => match it.next().as_deref() {
                Some("all") => args.privileges_all = true,
                Some("workers") => args.privileges_all = false,
                other => return Err(format!("--privileges: {other:?} is not workers or all")),
            },
            "--fault-panic-at-start" => args.panic_at_start = Some(value(&arg)?),
            "--fault-supervisor-panic" => match it.next().as_deref() {
                Some(when @ ("start" | "hup")) => args.supervisor_panic = Some(when.to_owned()),
                other => {
                    return Err(format!(
                        "--fault-supervisor-panic: {other:?} is not start or hup"
                    ));
                }
            },
            "--spawn-timeout" => args.spawn_timeout = Some(value(&arg)?),
            "--foreign-child" => {
                args.foreign_child = Some(it.next().ok_or("--foreign-child needs a value")?);
            }
            "--worker-foreign-child" => {
                args.worker_foreign_child =
                    Some(it.next().ok_or("--worker-foreign-child needs a value")?);
            }
            "--keep-fd" => {
                let v = it.next().ok_or("--keep-fd needs a value")?;
                // Negative numbers pass: the builder refuses them.
                let fd = v
                    .parse::<i32>()
                    .map_err(|_| format!("--keep-fd: {v:?} is not a descriptor number"))?;
                args.keep_fds.push(fd);
            }
            "-h" | "--help" => return Err(String::new()),
            other if !other.starts_with('-') && !port_seen => {
                port_seen = true;
                args.port = other
                    .parse()
                    .map_err(|_| format!("port: {other:?} is not a port number"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// A flag's value that does not fit the type its setter takes.
fn too_large(flag: &str, n: u64, max: impl std::fmt::Display) -> String {
    format!("{flag}: {n} is above the limit of {max}")
}

/// Prints a configuration error, naming the flag behind it if the command
/// line gave it, and returns exit status 2.
fn config_error(name: &str, err: &actix_daemon::Error, given: &[String]) -> ExitCode {
    use actix_daemon::Error;
    let param = match err {
        Error::Zero(param)
        | Error::OutOfRange { param, .. }
        | Error::WrongMode { param, .. }
        | Error::Needs { param, .. }
        | Error::AboveMaxChildren { what: param, .. } => Some(*param),
        _ => None,
    };
    let flag = param.map(|param| match param {
        "max_restarts window" => "--restart-window".to_owned(),
        param => format!("--{}", param.replace('_', "-")),
    });
    match flag.filter(|flag| given.contains(flag)) {
        Some(flag) => eprintln!("{name}: {flag}: {err}"),
        None => eprintln!("{name}: {err}"),
    }
    ExitCode::from(2)
}

/// Parses the command line, binds, prints `PORT=<n>`, builds and runs the
/// daemon. Exit status 2 for a bad flag or value, 1 for a failure to start.
pub fn main(defaults: Defaults) -> ExitCode {
    let args = match parse(&defaults) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("{}: {message}", defaults.name);
            }
            eprintln!("usage: {} {FLAGS}", defaults.name);
            return ExitCode::from(2);
        }
    };
    let mut builder = Daemon::builder()
        .alias(defaults.name)
        .verbose(true)
        .detach(!args.foreground)
        .logfile(&args.logfile);
    if let Some(n) = args.start_children {
        builder = builder.start_children(n);
    }
    if let Some(n) = args.min_spare {
        builder = builder.min_spare(n);
    }
    if let Some(n) = args.max_spare {
        builder = builder.max_spare(n);
    }
    if let Some(n) = args.max_children {
        builder = builder.max_children(n);
    }
    if let Some(n) = args.requests {
        builder = builder.requests(n);
    }
    if let Some(n) = args.requests_jitter {
        builder = builder.requests_jitter(n);
    }
    if let Some(n) = args.warm_workers {
        builder = builder.warm_workers(n);
    }
    if let Some(secs) = args.babysit {
        builder = builder.babysit(Duration::from_secs(secs));
    }
    if let Some(dir) = &args.workdir {
        builder = builder.workdir(dir);
    }
    if let Some(path) = &args.pidfile {
        builder = builder.pidfile(path);
    }
    if let Some(user) = &args.user {
        builder = builder.user(user);
    }
    if let Some(group) = &args.group {
        builder = builder.group(group);
    }
    if args.privileges_all {
        builder = builder.privileges(actix_daemon::PrivilegeScope::All);
    }
    if let Some(secs) = args.request_timeout {
        builder = builder.request_timeout(Duration::from_secs(secs));
    }
    if let Some(secs) = args.long_request_timeout {
        builder = builder.long_request_timeout(Duration::from_secs(secs));
    }
    if let Some(bytes) = args.max_rss {
        builder = builder.max_rss(bytes);
    }
    if let Some(secs) = args.cpu_limit {
        builder = builder.cpu_limit(Duration::from_secs(secs));
    }
    if let Some(percent) = args.cpu_share {
        // Rounds above 2^53, but never across the builder's bound (409,600
        // is exact), so a value it would refuse is still refused.
        builder = builder.cpu_share(percent as f64);
    }
    if let Some(n) = args.max_restarts {
        builder = builder.max_restarts(n, Duration::from_secs(args.restart_window));
    }
    if let Some(secs) = args.shutdown_timeout {
        builder = builder.shutdown_timeout(Duration::from_secs(secs));
    }
    builder = builder.keep_fds(args.keep_fds.iter().copied());
    // Validate before binding or forking anything.
    if let Err(err) = builder.clone().build() {
        return config_error(defaults.name, &err, &args.given);
    }
    let upgrading = std::env::var_os("ACTIX_DAEMON_UPGRADE_FDS").is_some();
    if let (true, Some(ms)) = (upgrading, args.slow_upgrade) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    if args.fault_fail_upgrade && upgrading {
        eprintln!(
            "{}: fault injection: this binary refuses the upgrade",
            defaults.name
        );
        return ExitCode::from(1);
    }
    // systemd socket activation or a binary upgrade's listener, else bind.
    let activated = actix_daemon::listen_fds().into_iter().next();
    let bound = match activated {
        Some(fd) => Ok(StdListener::from(fd)),
        None => StdListener::bind(("127.0.0.1", args.port)),
    };
    let listener = match bound {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "{}: cannot listen on 127.0.0.1:{}: {err}",
                defaults.name, args.port
            );
            return ExitCode::from(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    if listener.set_nonblocking(true).is_err() {
        return ExitCode::from(1);
    }
    if args.binary_upgrade {
        builder = builder.upgrade_with(&listener);
    }
    if let Some(secs) = args.spawn_timeout {
        builder = builder.spawn_timeout(Duration::from_secs(secs));
    }
    let daemon = match builder.build() {
        Ok(daemon) => daemon,
        Err(err) => return config_error(defaults.name, &err, &args.given),
    };
    println!("PORT={port}");
    let _ = std::io::stdout().flush();
    let logfile = args.logfile.clone();
    let ignore_pause = args.ignore_pause;
    let fault_commands = args.fault_commands;
    let panic_at_start = args.panic_at_start;
    let foreign_child = args.foreign_child.clone();
    let worker_foreign_child = args.worker_foreign_child.clone();
    let supervisor_panic = args.supervisor_panic.clone();
    // Fault injection across processes: each worker appends a byte to this
    // file as it starts, and the first N panic.
    let starts = args.logfile.with_extension("starts");
    let result = daemon.run(move |process: &Process| {
        if let (true, Some(n)) = (process.is_worker(), panic_at_start) {
            let count = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&starts)
                .and_then(|mut f| {
                    f.write_all(b".")?;
                    f.metadata()
                })
                .map(|m| m.len())
                .unwrap_or(0);
            if count <= n {
                panic!("fault injection: worker start {count} of {n} panics");
            }
        }
        // Foreign children through the crate's helper: each dies with the
        // process that started it, even one SIGKILLed, and is reaped and
        // TERMed at shutdown by the daemon.
        let command = match process.is_supervisor() {
            true => &foreign_child,
            false => &worker_foreign_child,
        };
        if let Some(command) = command {
            let mut sh = std::process::Command::new("sh");
            sh.arg("-c").arg(command);
            match actix_daemon::spawn_foreign_child(sh) {
                Ok(child) => {
                    slog::info!(process.logger(), "foreign child started"; "child" => child.id());
                }
                Err(err) => slog::error!(process.logger(), "foreign child"; "error" => %err),
            }
        }
        if let (true, Some(when)) = (process.is_supervisor(), &supervisor_panic) {
            Panicker {
                on_hup: when == "hup",
            }
            .start();
        }
        let info = Rc::new(Info {
            logfile: logfile.display().to_string(),
            fault_commands,
            forger: actix_daemon::bench_support::SlotForger::of(process),
        });
        let forking = matches!(
            process.config().mode(),
            actix_daemon::Mode::ForkPerRequest { .. }
        );
        if process.is_supervisor() {
            if forking {
                let listener = TcpListener::from_std(listener).expect("listener");
                Acceptor {
                    listener: Rc::new(listener),
                    accepting: None,
                    ignore_pause,
                }
                .start();
            }
        } else {
            let listener =
                (!forking).then(|| Rc::new(TcpListener::from_std(listener).expect("listener")));
            ChildActor {
                listener,
                info,
                accepting: None,
            }
            .start();
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}: {}", defaults.name, chain(&err));
            ExitCode::from(1)
        }
    }
}

/// An error with its sources: "cannot open log file x: No such file...".
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

struct Info {
    logfile: String,
    fault_commands: bool,
    forger: Option<actix_daemon::bench_support::SlotForger>,
}

/// Fault injection: an application actor in the supervisor that panics
/// when the daemon starts (`--fault-supervisor-panic start`) or on SIGHUP
/// (`hup`).
struct Panicker {
    on_hup: bool,
}

impl Actor for Panicker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        DaemonActor::from_registry().do_send(Subscribe(ctx.address().recipient()));
    }
}

impl Handler<DaemonSignal> for Panicker {
    type Result = ();

    fn handle(&mut self, signal: DaemonSignal, _: &mut Context<Self>) {
        match signal {
            DaemonSignal::Start if !self.on_hup => {
                panic!("fault injection: the supervisor panics at start")
            }
            DaemonSignal::Hup if self.on_hup => {
                panic!("fault injection: the supervisor panics on HUP")
            }
            _ => {}
        }
    }
}

/// Fork per request: accepts in the supervisor while the daemon says
/// `Accept`, and hands each connection to the daemon.
struct Acceptor {
    listener: Rc<TcpListener>,
    accepting: Option<SpawnHandle>,
    /// Test aid: keep accepting at max_children, so that requests reach the
    /// daemon's queue.
    ignore_pause: bool,
}

impl Actor for Acceptor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        DaemonActor::from_registry().do_send(Subscribe(ctx.address().recipient()));
    }
}

impl Acceptor {
    fn accept_one(&mut self, ctx: &mut Context<Self>) {
        let listener = self.listener.clone();
        let fut = async move { listener.accept().await }
            .into_actor(self)
            .map(|res, act, ctx| {
                act.accepting = None;
                if let Ok((stream, peer)) = res {
                    let payload = match stream.into_std() {
                        Ok(s) => Payload::new()
                            .with_fd(OwnedFd::from(s))
                            .and_then(|p| p.with_data(&peer.to_string()))
                            .map_err(|err| err.to_string()),
                        Err(err) => Err(err.to_string()),
                    };
                    match payload {
                        Ok(payload) => DaemonActor::from_registry().do_send(UpdateStatus::Req(payload)),
                        Err(err) => slog::warn!(actix_daemon::logger(), "connection dropped"; "error" => %err),
                    }
                }
                act.accept_one(ctx);
            });
        self.accepting = Some(ctx.spawn(fut));
    }
}

impl Handler<DaemonSignal> for Acceptor {
    type Result = ();

    fn handle(&mut self, signal: DaemonSignal, ctx: &mut Context<Self>) {
        match signal {
            DaemonSignal::Accept if self.accepting.is_none() => self.accept_one(ctx),
            DaemonSignal::Pause if self.ignore_pause => {}
            DaemonSignal::Pause | DaemonSignal::Shutdown => {
                if let Some(handle) = self.accepting.take() {
                    ctx.cancel_future(handle);
                }
            }
            _ => {}
        }
    }
}

/// The worker's side: serves one connection at a time.
struct ChildActor {
    listener: Option<Rc<TcpListener>>,
    info: Rc<Info>,
    accepting: Option<SpawnHandle>,
}

impl Actor for ChildActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        DaemonActor::from_registry().do_send(Subscribe(ctx.address().recipient()));
    }
}

impl ChildActor {
    fn serve(&mut self, stream: TcpStream, ctx: &mut Context<Self>) {
        let info = self.info.clone();
        ctx.spawn(
            async move {
                let _ = serve(stream, &info).await;
                DaemonActor::from_registry().do_send(UpdateStatus::Done);
            }
            .into_actor(self),
        );
    }
}

impl ChildActor {
    /// Pre-fork: accepts one connection on the shared listener, reports
    /// `Req`, serves it. A failed accept (a connection reset in the queue,
    /// say) is retried at once: the worker is still waiting.
    fn accept_one(&mut self, ctx: &mut Context<Self>) {
        let Some(listener) = self.listener.clone() else {
            return;
        };
        let fut = async move { listener.accept().await }
            .into_actor(self)
            .map(|res, act, ctx| {
                act.accepting = None;
                match res {
                    Ok((stream, _)) => {
                        DaemonActor::from_registry().do_send(UpdateStatus::Req(Payload::new()));
                        act.serve(stream, ctx);
                    }
                    // Not a reason to stop waiting, but no busy loop either
                    // (EMFILE, say): try again shortly.
                    Err(_) => {
                        ctx.run_later(Duration::from_millis(10), |act, ctx| act.accept_one(ctx));
                    }
                }
            });
        self.accepting = Some(ctx.spawn(fut));
    }
}

impl Handler<DaemonSignal> for ChildActor {
    type Result = ();

    fn handle(&mut self, signal: DaemonSignal, ctx: &mut Context<Self>) {
        match signal {
            // Fork per request: this worker's connection.
            DaemonSignal::Child(Some(payload)) => {
                let stream = payload
                    .take_fd(0)
                    .map(std::net::TcpStream::from)
                    .and_then(|s| TcpStream::from_std(s).ok());
                match stream {
                    Some(stream) => self.serve(stream, ctx),
                    None => DaemonActor::from_registry().do_send(UpdateStatus::Done),
                }
            }
            // Pre-fork: ready for the first request.
            DaemonSignal::Child(None) => DaemonActor::from_registry().do_send(UpdateStatus::Wait),
            DaemonSignal::Accept if self.accepting.is_none() => self.accept_one(ctx),
            DaemonSignal::Shutdown => {
                if let Some(handle) = self.accepting.take() {
                    ctx.cancel_future(handle);
                }
            }
            _ => {}
        }
    }
}

fn kernel_id() -> String {
    format!(
        "actix-system-{}-{}",
        std::process::id(),
        actix::System::current().id()
    )
}

/// The line protocol: one command per line, answers end with CR LF.
async fn serve(stream: TcpStream, info: &Info) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut ballast: Vec<Vec<u8>> = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let command = line.trim_end_matches('\r').trim().to_ascii_uppercase();
        let mut answer = String::new();
        let mut push = |text: &str| {
            for l in text.lines() {
                answer.push_str(l);
                answer.push_str("\r\n");
            }
        };
        let mut done = false;
        match command.as_str() {
            "PID" => push(&std::process::id().to_string()),
            "PING" => push("PONG"),
            "PARENT" => push(&nix_ppid().to_string()),
            "KERNEL" => push(&kernel_id()),
            "LOGFILE" => push(&info.logfile),
            "STATUS" => {
                let report = DaemonActor::from_registry()
                    .send(Status)
                    .await
                    .map(|r| r.to_string())
                    .unwrap_or_else(|err| format!("no status: {err}"));
                push(&report);
                push("DONE");
            }
            "PEEK" => {
                let report = DaemonActor::from_registry()
                    .send(Peek { verbose: true })
                    .await
                    .map(|r| r.to_string())
                    .unwrap_or_else(|err| format!("no peek: {err}"));
                push(&report);
                push("DONE");
            }
            "DONE" => {
                push("OK");
                done = true;
            }
            // Write a foreign pid and a nonsense state into this worker's
            // own slot, as a compromised worker could.
            _ if info.fault_commands && command.starts_with("FORGE ") => {
                match (command[6..].trim().parse::<i32>(), &info.forger) {
                    (Ok(pid), Some(forger)) => {
                        forger.forge(pid, 200);
                        push("OK");
                    }
                    _ => push("???"),
                }
            }
            // This worker's slot; a write into another slot or the header
            // of the scoreboard (only its own slot is writable: SIGSEGV).
            "SLOT" if info.fault_commands && info.forger.is_some() => {
                push(&info.forger.as_ref().map_or(0, |f| f.slot().0).to_string())
            }
            _ if info.fault_commands && command.starts_with("SCRIBBLE ") => {
                match (command[9..].trim(), &info.forger) {
                    ("HEADER", Some(forger)) => {
                        forger.scribble_header();
                        push("OK");
                    }
                    (n, Some(forger)) => match n.parse::<usize>() {
                        Ok(n) => {
                            forger.scribble(actix_daemon::SlotId(n));
                            push("OK");
                        }
                        Err(_) => push("???"),
                    },
                    _ => push("???"),
                }
            }
            _ if info.fault_commands => match fault(&command, &mut ballast).await {
                Some(text) => push(&text),
                None => push("???"),
            },
            _ => push("???"),
        }
        write.write_all(answer.as_bytes()).await?;
        if done {
            break;
        }
    }
    write.shutdown().await
}

fn nix_ppid() -> u32 {
    std::os::unix::process::parent_id()
}

/// The fault commands (with `--fault-commands`), so that an operator or a
/// test can watch the babysitter work. `None`: not a fault command.
async fn fault(command: &str, ballast: &mut Vec<Vec<u8>>) -> Option<String> {
    let mut words = command.split_whitespace();
    match (words.next()?, words.next()) {
        // Burn CPU in this worker, blocking its event loop for good.
        ("SPIN", None) => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        // Stop answering while in r (or l after LONG).
        ("HANG", None) => std::future::pending().await,
        ("LONG", None) => {
            DaemonActor::from_registry().do_send(UpdateStatus::Long);
            Some("OK".into())
        }
        // Grow resident memory by MiB, touching every page.
        ("ALLOC", Some(mib)) => {
            let mib: usize = mib.parse().ok()?;
            ballast.push(vec![1u8; mib << 20]);
            let total: usize = ballast.iter().map(Vec::len).sum();
            Some(format!("OK {}", total >> 20))
        }
        ("PANIC", None) => panic!("fault injection: PANIC command"),
        // Log N numbered lines at 1,000 a second (for log rotation tests).
        ("LOG", Some(n)) => {
            let n: u64 = n.parse().ok()?;
            let log = actix_daemon::logger();
            let mut tick = actix_rt::time::interval(Duration::from_millis(1));
            for seq in 0..n {
                tick.tick().await;
                slog::info!(log, "fault log line"; "seq" => seq);
            }
            Some(format!("OK {n}"))
        }
        // As an attacker with code in this worker: read every
        // SOCK_SEQPACKET socket this process holds for MS milliseconds
        // (in fork per request, its own channel: nothing of another
        // worker's is there), and say how many messages came.
        ("STEAL", Some(ms)) => {
            let ms: u64 = ms.parse().ok()?;
            let deadline = std::time::Instant::now() + Duration::from_millis(ms);
            let mut got = 0u64;
            while std::time::Instant::now() < deadline {
                for fd in seqpacket_fds() {
                    let mut buf = [0u8; 256];
                    if let Ok(n) = nix::sys::socket::recv(
                        fd,
                        &mut buf,
                        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                    ) {
                        got += u64::from(n > 0);
                    }
                }
                actix_rt::time::sleep(Duration::from_millis(1)).await;
            }
            Some(format!("OK {got}"))
        }
        // As an attacker: send N forged messages, each with a descriptor,
        // on every SOCK_SEQPACKET socket this process holds (its channel).
        ("FLOOD", Some(n)) => {
            use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
            use std::io::IoSlice;
            use std::os::fd::AsRawFd;
            let n: u64 = n.parse().ok()?;
            let null = std::fs::File::open("/dev/null").ok()?;
            let fds = [null.as_raw_fd()];
            let mut sent = 0u64;
            for fd in seqpacket_fds() {
                for i in 0..n {
                    let junk = if i % 2 == 0 {
                        &b"C"[..]
                    } else {
                        &b"Qforged request"[..]
                    };
                    let cmsg = [ControlMessage::ScmRights(&fds)];
                    if sendmsg::<()>(
                        fd,
                        &[IoSlice::new(junk)],
                        &cmsg,
                        MsgFlags::MSG_DONTWAIT,
                        None,
                    )
                    .is_ok()
                    {
                        sent += 1;
                    }
                }
            }
            Some(format!("OK {sent}"))
        }
        _ => None,
    }
}

/// Every `SOCK_SEQPACKET` socket this process holds (what an attacker in
/// a worker would find by scanning its descriptors).
fn seqpacket_fds() -> Vec<std::os::fd::RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<std::os::fd::RawFd>().ok())
        .filter(|&fd| {
            // SAFETY: only borrowed for this call; a closed number fails.
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::sys::socket::getsockopt(&b, nix::sys::socket::sockopt::SockType)
                == Ok(nix::sys::socket::SockType::SeqPacket)
        })
        .collect()
}
