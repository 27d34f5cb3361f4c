//! systemd: the notify protocol against a real notify socket, socket
//! activation, and the reload and resize signals.

mod support;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use support::{DEADLINE, Daemon, exists, wait_until};

/// A notify socket like systemd's, collecting messages on a thread.
struct NotifySocket {
    path: std::path::PathBuf,
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        NotifySocket {
            path,
            rx,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// Waits for a message containing `text`; returns it.
    fn expect(&mut self, text: &str) -> String {
        if let Some(m) = self.seen.iter().find(|m| m.contains(text)) {
            return m.clone();
        }
        let end = std::time::Instant::now() + DEADLINE;
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(m) => {
                    self.seen.push(m.clone());
                    if m.contains(text) {
                        return m;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {text:?} from the daemon; got {:#?}", self.seen);
    }

    fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
        self.seen.clear();
    }
}

#[test]
fn ready_status_watchdog_reloading_and_stopping() {
    let mut notify = NotifySocket::new();
    let path = notify.path.clone();
    let d = Daemon::start_with("preforking", &["--requests", "0"], |cmd, _| {
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000");
    });
    let ready = notify.expect("READY=1");
    assert!(
        ready.contains("STATUS=Pre-forking server: 2 workers ("),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("MAINPID={}", d.supervisor)),
        "{ready}"
    );
    notify.expect("WATCHDOG=1");
    // A graceful reload replaces every worker.
    let before = d.wait_workers(2);
    notify.drain();
    d.signal(Signal::SIGUSR1);
    notify.expect("RELOADING=1");
    notify.expect("READY=1");
    for pid in &before {
        assert!(
            wait_until(DEADLINE, || !exists(*pid)),
            "old worker {pid} stayed"
        );
    }
    let after = d.wait_workers(2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} {after:?}"
    );
    let mut c = d.conn();
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
    d.signal(Signal::SIGTERM);
    notify.expect("STOPPING=1");
    assert!(matches!(d.wait_exit(), WaitStatus::Exited(_, 0)));
}

#[test]
fn ttin_and_ttou_resize_the_spares() {
    let d = Daemon::start("preforking", &["--requests", "0"]);
    d.wait_workers(2);
    // Signals of one kind sent together may coalesce: one at a time.
    let resize = |sig: Signal| {
        let before = d.log_text().matches("pool resized").count();
        d.signal(sig);
        assert!(
            wait_until(DEADLINE, || d.log_text().matches("pool resized").count()
                > before),
            "{sig:?} not seen\n{}",
            d.report()
        );
    };
    resize(Signal::SIGTTIN);
    d.wait_workers(3);
    resize(Signal::SIGTTIN);
    d.wait_workers(4);
    let mut c = d.conn();
    let status = c.report("STATUS");
    c.done();
    assert!(
        status.iter().any(|l| l.contains("spares 4 to 10")),
        "{status:#?}"
    );
    for _ in 0..9 {
        resize(Signal::SIGTTOU);
    }
    // min_spare 1, max_spare 1: surplus spares retire.
    d.wait_workers(1);
    let mut c = d.conn();
    let status = c.report("STATUS");
    c.done();
    assert!(
        status.iter().any(|l| l.contains("spares 1 to 1")),
        "{status:#?}"
    );
}

#[test]
fn socket_activation_serves_on_the_passed_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let d = Daemon::start_wrapped(
        "forking",
        &["sh", "-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""],
        &[],
        move |cmd, _| {
            use std::os::unix::process::CommandExt;
            // SAFETY: dup2 and fcntl are async-signal-safe; nothing else runs between
            // fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    // dup2 onto itself would keep close-on-exec.
                    let ok = if fd == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, 3)
                    };
                    if ok < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    drop(listener);
    assert_eq!(d.port, port, "the daemon reports the passed socket's port");
    let mut c = support::Conn::open(port);
    assert_eq!(c.cmd("PING"), "PONG");
    c.done();
}
