//! The seed's pre-forking example server, on a pre-forked pool.
//!
//! A line-based TCP server (the protocol of `EXAMPLES-PROTOCOL.md`): each
//! worker accepts one connection at a time on the listener bound before
//! `run`; with the defaults every worker serves one connection and is
//! replaced.
//!
//! Defaults: start_children 1, min_spare 2, max_children 10 (so max_spare
//! 8), requests 1, verbose, detached, logging to `preforking.log` in the
//! directory it was started from.
//!
//! ```text
//! cargo run --example preforking -- 0          # prints PORT=<n>, then detaches
//! nc 127.0.0.1 <n>                              # then type: PID, PING, PARENT,
//!                                               # KERNEL, LOGFILE, STATUS, PEEK, DONE
//! kill -HUP <parent>                            # reopen the log file everywhere
//! kill -USR2 <parent>                           # verbose peek into the log
//! kill -TERM <parent>                           # clean shutdown of every process
//! ```
//!
//! Flags after the port: `--foreground`, `--logfile PATH`,
//! `--start-children N`, `--min-spare N`, `--max-spare N`, `--max-children
//! N`, `--requests N` (0: unlimited), `--requests-jitter N`, `--warm-workers
//! N` (fork per request), `--babysit SECS`, `--shutdown-timeout SECS`,
//! `--workdir DIR` (of the detached daemon), `--ignore-pause` (fork per
//! request: keep accepting at max_children, to exercise the daemon's queue),
//! and the babysitter's limits, the operations and the fault injections the
//! usage line lists (run with `--help`). A bad flag or value prints an error
//! and exits with status 2 before anything starts.
//!
//! Under systemd it takes its listener from socket activation (`LISTEN_FDS`)
//! if there is one, and speaks the notify protocol when `NOTIFY_SOCKET` is
//! set; `kill -USR1` replaces every worker, `kill -TTIN` / `kill -TTOU` add or
//! remove a spare.
//!
//! `--binary-upgrade`: `kill -USR2 <parent>` starts the binary again, hands
//! it the listener, and the old daemon drains once the new one is ready
//! (`--fault-fail-upgrade` makes the new binary refuse, to watch the old one
//! keep serving).
//!
//! Operations: `--pidfile PATH` (locked; a second instance refuses to
//! start), `--user NAME` and `--group NAME` (drop privileges),
//! `--privileges workers|all` (which processes drop them; default workers).
//!
//! Babysitting and fault injection (see the book's babysitting chapter):
//! `--babysit SECS` turns the babysitter on, with limits `--request-timeout
//! SECS`, `--long-request-timeout SECS`, `--max-rss MIB`, `--cpu-limit SECS`
//! (total CPU) and `--cpu-share PERCENT`; `--max-restarts N` (within
//! `--restart-window SECS`, default 60) gives up on a crash loop. Only with
//! `--fault-commands`, the server also answers `SPIN` (burn CPU in the
//! serving worker), `HANG` (stop answering), `LONG` (switch to `l`; a later
//! `HANG` hangs in `l`), `ALLOC <MiB>` (grow resident memory), `PANIC` (the
//! worker panics) and `LOG <N>` (log N numbered lines at 1,000 a second);
//! without it they answer `???`. `--fault-panic-at-start N` makes the first N
//! workers panic as they start; `--foreign-child CMD` starts `sh -c CMD` in
//! the supervisor, and `--worker-foreign-child CMD` in every worker, with
//! `actix_daemon::spawn_foreign_child` (registered with the daemon, and
//! killed by the kernel if the process that started it dies). `--keep-fd N`
//! (repeatable) keeps descriptor N open through `run`'s close of inherited
//! descriptors.
//!
//! ```text
//! cargo run --example preforking -- 0 --babysit 1 --request-timeout 2 --fault-commands
//! nc 127.0.0.1 <n>    # then: HANG, and watch preforking.log: INT, TERM, KILL
//! ```
//!
//! Stdout protocol: exactly one line `PORT=<n>` once the listener is bound,
//! before detaching. The launching process exits 0 once the initial pool is
//! up (or 1 with the start-up error on stderr).

mod common;

fn main() -> std::process::ExitCode {
    common::main(common::Defaults {
        name: "preforking",
        start_children: Some(1),
        min_spare: Some(2),
        max_children: Some(10),
        requests: Some(1),
    })
}
