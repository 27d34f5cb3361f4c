//! The status endpoint is the application's to protect (issue 11, point 6):
//! `hello_prefork` as real processes, asked over real TCP connections from
//! chosen source addresses (all of 127.0.0.0/8 is local on Linux, so a
//! client socket bound to 127.0.0.2 is a peer that is not 127.0.0.1).
//!
//! The protection is about the network peer, not about the worker's user,
//! so most tests need no privilege; one runs the workers as `nobody` under
//! a root supervisor (the deployment of the issue), and skips when not
//! root.

#![cfg(feature = "web")]

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use support::{Daemon, run_failing};

/// A TCP connection to `127.0.0.1:port` from `source` (any port): a
/// socket bound to `source` before it connects.
fn connect_from(source: Ipv4Addr, port: u16) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("runtime");
    let stream = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((source, 0)))?;
            let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            tokio::time::timeout(Duration::from_secs(10), socket.connect(target))
                .await
                .map_err(|_| std::io::Error::other("connect timed out"))?
        })
        .unwrap_or_else(|err| panic!("connect from {source}: {err}"))
        .into_std()
        .expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let local = stream.local_addr().expect("local addr");
    assert_eq!(local.ip(), std::net::IpAddr::V4(source), "{local}");
    stream
}

/// `GET path` from `source`, with `headers`: (status, body).
fn get_from(d: &Daemon, source: [u8; 4], path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = connect_from(Ipv4Addr::from(source), d.port);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|err| panic!("GET {path}: {err}\n{}", d.report()));
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

const LOCAL: [u8; 4] = [127, 0, 0, 1];
const OTHER: [u8; 4] = [127, 0, 0, 2];

/// What the status page says, and no application page does.
const STATUS_TEXT: &str = "Pre-forking server";

fn assert_status_page(d: &Daemon, (status, body): (u16, String), what: &str) {
    assert_eq!(status, 200, "{what}: {body}\n{}", d.report());
    assert!(
        body.contains(STATUS_TEXT),
        "{what}: not the status page: {body}"
    );
}

/// Refused: the application's own 404, not the status page.
fn assert_refused(d: &Daemon, (status, body): (u16, String), what: &str) {
    assert_eq!(status, 404, "{what}: {body}\n{}", d.report());
    assert!(!body.contains(STATUS_TEXT), "{what}: status leaked: {body}");
}

fn stop(d: Daemon) {
    d.signal(Signal::SIGTERM);
    assert!(
        matches!(d.wait_exit(), WaitStatus::Exited(_, 0)),
        "{}",
        d.report()
    );
}

#[test]
fn the_default_allowlist_answers_loopback_and_refuses_another_peer() {
    let d = Daemon::start("hello_prefork", &["--start-children", "1"]);
    d.wait_workers(1);
    assert_status_page(&d, get_from(&d, LOCAL, "/status", &[]), "127.0.0.1");
    // The same in JSON: the content negotiation of the query.
    let (status, json) = get_from(&d, LOCAL, "/status?json", &[]);
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["mode"], "Pre-forking server");
    // 127.0.0.2 is served by the application, but not the status page.
    assert_eq!(
        get_from(&d, OTHER, "/", &[]),
        (200, "Hello, world!\n".into())
    );
    assert_refused(&d, get_from(&d, OTHER, "/status", &[]), "127.0.0.2");
    assert_refused(
        &d,
        get_from(&d, OTHER, "/status?prometheus", &[]),
        "127.0.0.2",
    );
    // A header claiming loopback does not help the other peer ...
    for header in ["X-Forwarded-For", "X-Real-IP", "Forwarded"] {
        let value = if header == "Forwarded" {
            "for=127.0.0.1"
        } else {
            "127.0.0.1"
        };
        assert_refused(
            &d,
            get_from(&d, OTHER, "/status", &[(header, value)]),
            &format!("127.0.0.2 with {header}"),
        );
    }
    // ... and a loopback peer that says it forwards for someone else (a
    // proxy on this host) is refused too.
    assert_refused(
        &d,
        get_from(&d, LOCAL, "/status", &[("X-Forwarded-For", "203.0.113.7")]),
        "127.0.0.1 forwarding",
    );
    stop(d);
}

#[test]
fn as_root_with_workers_as_nobody_the_allowlist_holds() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run the workers as nobody");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("skipped: no user nobody");
        return;
    };
    let d = Daemon::start_with(
        "hello_prefork",
        &["--start-children", "1", "--user", "nobody"],
        |_, dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        },
    );
    let workers = d.wait_workers(1);
    let uid = procfs::process::Process::new(workers[0])
        .and_then(|p| p.uid())
        .unwrap();
    assert_eq!(uid, nobody.uid.as_raw(), "the worker is not nobody");
    assert_status_page(&d, get_from(&d, LOCAL, "/status", &[]), "127.0.0.1");
    assert_refused(&d, get_from(&d, OTHER, "/status", &[]), "127.0.0.2");
    stop(d);
}

#[test]
fn an_explicit_allowlist_replaces_loopback() {
    let d = Daemon::start(
        "hello_prefork",
        &["--start-children", "1", "--status-allow", "127.0.0.2"],
    );
    d.wait_workers(1);
    assert_refused(&d, get_from(&d, LOCAL, "/status", &[]), "127.0.0.1");
    assert_status_page(&d, get_from(&d, OTHER, "/status", &[]), "127.0.0.2");
    stop(d);

    // A prefix: 127.0.0.0/31 is .0 and .1, not .2.
    let d = Daemon::start(
        "hello_prefork",
        &[
            "--start-children",
            "1",
            "--status-allow",
            "::1,127.0.0.0/31",
        ],
    );
    d.wait_workers(1);
    assert_status_page(&d, get_from(&d, LOCAL, "/status", &[]), "127.0.0.1 in /31");
    assert_refused(
        &d,
        get_from(&d, OTHER, "/status", &[]),
        "127.0.0.2 not in /31",
    );
    stop(d);
}

#[test]
fn off_leaves_the_path_to_the_application() {
    let d = Daemon::start(
        "hello_prefork",
        &["--start-children", "1", "--status-path", "off"],
    );
    d.wait_workers(1);
    assert_refused(&d, get_from(&d, LOCAL, "/status", &[]), "off, 127.0.0.1");
    assert_eq!(
        get_from(&d, LOCAL, "/", &[]),
        (200, "Hello, world!\n".into())
    );
    stop(d);
}

#[test]
fn mounted_in_the_application_the_page_is_behind_its_middleware() {
    let d = Daemon::start(
        "hello_prefork",
        &["--start-children", "1", "--status-token", "s3cret"],
    );
    d.wait_workers(1);
    // From loopback without the token: the application's middleware
    // answers, so the built-in endpoint did not.
    for (what, headers) in [
        ("no token", &[][..]),
        ("a wrong token", &[("Authorization", "Bearer s3cre")][..]),
        ("another scheme", &[("Authorization", "Basic s3cret")][..]),
    ] {
        let (status, body) = get_from(&d, LOCAL, "/status", headers);
        assert_eq!(status, 401, "{what}: {body}\n{}", d.report());
        assert!(!body.contains(STATUS_TEXT), "{what}: {body}");
    }
    let token = [("Authorization", "Bearer s3cret")];
    assert_status_page(&d, get_from(&d, LOCAL, "/status", &token), "token");
    // The token decides, not the peer.
    assert_status_page(
        &d,
        get_from(&d, OTHER, "/status", &token),
        "token from 127.0.0.2",
    );
    let (status, json) = get_from(&d, OTHER, "/status?json", &token);
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["role"], "worker");
    let (status, prom) = get_from(&d, LOCAL, "/status?prometheus", &token);
    assert_eq!(status, 200);
    assert!(prom.contains("actix_daemon_requests_total "), "{prom}");
    stop(d);
}

#[test]
fn status_misconfiguration_exits_2_before_anything_starts() {
    for (args, needle) in [
        (&["--status-path", "status"][..], "status path \"status\""),
        (
            &["--status-allow", "localhost"],
            "status allowlist entry \"localhost\"",
        ),
        (&["--status-allow", "10.0.0.1/8"], "host bits"),
        (&["--status-allow", "::1,10.0.0.256"], "\"10.0.0.256\""),
        (&["--status-path", "off", "--status-allow", "::1"], "off"),
        (
            &["--status-token", "t", "--status-allow", "::1"],
            "one of them",
        ),
        (&["--status-token", "a b"], "--status-token"),
    ] {
        let (code, stderr) = run_failing("hello_prefork", args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: no {needle:?} in {stderr}"
        );
    }
}

#[test]
fn the_client_really_comes_from_its_bound_address() {
    // The harness itself: a socket bound to 127.0.0.2 is seen as such by
    // the server's accept (here a plain listener).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let _client = connect_from(Ipv4Addr::from(OTHER), port);
    let (_, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip(), SocketAddr::from((OTHER, 0)).ip());
}
