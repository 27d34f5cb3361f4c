//! The seed's forking example server: one worker per connection.
//!
//! A line-based TCP server (the protocol of `EXAMPLES-PROTOCOL.md`): the
//! supervisor accepts, and hands each connection to the daemon with
//! `UpdateStatus::Req`; the daemon gives it to a worker of its own (one
//! forked ahead and waiting, `--warm-workers N`, default 1; or one forked for
//! it) that receives the connection in `DaemonSignal::Child(Some(payload))`,
//! serves it, and exits after `DONE`. When no worker could take another
//! connection the acceptor gets `Pause`, and waiting connections stay in the
//! listen queue until a worker ends.
//!
//! Defaults: fork per connection, max_children 3, verbose, detached,
//! logging to `forking.log` in the directory it was started from.
//!
//! ```text
//! cargo run --example forking -- 0             # prints PORT=<n>, then detaches
//! nc 127.0.0.1 <n>                              # then type: PID, PING, PARENT,
//!                                               # KERNEL, LOGFILE, STATUS, PEEK, DONE
//! kill -HUP <parent>                            # reopen the log file everywhere
//! kill -USR2 <parent>                           # verbose peek into the log
//! kill -TERM <parent>                           # clean shutdown of every process
//! ```
//!
//! Flags after the port: as for `preforking` (`--foreground`, `--logfile
//! PATH`, `--max-children N`, ...); `--start-children N` turns it into a
//! pre-forked pool running the same code. A bad flag or value prints an
//! error and exits with status 2 before anything starts.
//!
//! Stdout protocol: exactly one line `PORT=<n>` once the listener is bound,
//! before detaching. The launching process exits 0 once the daemon is ready.

mod common;

fn main() -> std::process::ExitCode {
    common::main(common::Defaults {
        name: "forking",
        start_children: None,
        min_spare: None,
        max_children: Some(3),
        requests: None,
    })
}
