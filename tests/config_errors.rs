//! Bad input gets a clear error before anything forks.

mod support;

use support::run_failing;

#[test]
fn bad_flags_and_values_exit_2_with_a_message() {
    for (example, args, message) in [
        (
            "preforking",
            vec!["0", "--bogus"],
            "unknown argument \"--bogus\"",
        ),
        (
            "preforking",
            vec!["0", "--max-children", "x"],
            "not a whole number",
        ),
        (
            "preforking",
            vec!["0", "--min-spare", "5", "--max-spare", "3"],
            "max_spare (3) is below min_spare (5)",
        ),
        (
            "preforking",
            vec!["0", "--start-children", "20"],
            "start_children (20) is above max_children (10)",
        ),
        (
            "forking",
            vec!["0", "--max-children", "0"],
            "max_children must be greater than zero",
        ),
        (
            "forking",
            vec!["0", "--min-spare", "2"],
            "min_spare only applies to a pre-forked pool",
        ),
        (
            "preforking",
            vec!["0", "--babysit", "0"],
            "babysit must be greater than zero",
        ),
        ("forking", vec!["nope"], "is not a port number"),
    ] {
        let (code, stderr) = run_failing(example, &args);
        assert_eq!(code, 2, "{example} {args:?}: {stderr}");
        assert!(stderr.contains(message), "{example} {args:?}: {stderr}");
    }
}

#[test]
fn a_log_file_that_cannot_be_created_fails_before_detaching() {
    let (code, stderr) = run_failing("preforking", &["0", "--logfile", "/nonexistent/dir/x.log"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot open log file /nonexistent/dir/x.log"),
        "{stderr}"
    );
}

/// Runs an example that must fail before starting, marked with an
/// environment variable that every process it forks would inherit:
/// returns (status, stdout, stderr, the pids still carrying the mark,
/// whether its log file exists).
fn run_marked(name: &str, args: &[&str]) -> (i32, String, String, Vec<i32>, bool) {
    use std::io::Read;
    use std::process::{Command, Stdio};

    // Orphans of the example would become children of this process, so
    // that none escapes the scan below by being reparented.
    support::subreaper();
    let dir = tempfile::tempdir().expect("tempdir");
    let mark = format!("{}-{name}-{}", std::process::id(), args.join("-"));
    let mut child = Command::new(support::example(name))
        .args(args)
        .current_dir(dir.path())
        .env("ACTIX_DAEMON_TEST_MARK", &mark)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let status = support::wait_child(&mut child, support::DEADLINE);
    let mut stdout = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout);
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    let needle = format!("ACTIX_DAEMON_TEST_MARK={mark}\0");
    let left: Vec<i32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect();
    let logged = dir.path().join(format!("{name}.log")).exists();
    (status.code().unwrap_or(-1), stdout, stderr, left, logged)
}

#[test]
fn huge_max_children_exit_2_before_anything_forks() {
    // u64::MAX, and 2^58: 64 bytes a slot would overflow the scoreboard's size.
    for value in ["18446744073709551615", "288230376151711744"] {
        for example in ["forking", "preforking"] {
            let (code, stdout, stderr, left, logged) =
                run_marked(example, &["0", "--max-children", value]);
            let what = format!("{example} --max-children {value}: {stderr}");
            assert_eq!(code, 2, "{what}");
            assert_eq!(
                stderr.trim_end(),
                format!(
                    "{example}: --max-children: max_children is {value}, \
                     expected 1 to 65536 (MAX_CHILDREN)"
                ),
                "{what}"
            );
            assert_eq!(stdout, "", "nothing bound or announced: {what}");
            assert!(!logged, "the log file was opened: {what}");
            for &pid in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = support::wait_pid(pid, support::DEADLINE);
            }
            assert_eq!(left, Vec::<i32>::new(), "processes left behind: {what}");
        }
    }
}

#[test]
fn values_that_do_not_fit_their_setter_exit_2_naming_the_flag() {
    for (example, args, message) in [
        (
            "preforking",
            vec!["0", "--max-restarts", "4294967297"],
            "--max-restarts: 4294967297 is above the limit of 4294967295",
        ),
        (
            "preforking",
            vec!["0", "--max-restarts", "1000001"],
            "--max-restarts: max_restarts is 1000001, expected 1 to 1000000 crashes",
        ),
        (
            "forking",
            vec!["0", "--babysit", "1", "--max-rss", "17592186044416"],
            "--max-rss: 17592186044416 is above the limit of 17592186044415",
        ),
        (
            "forking",
            vec!["0", "--babysit", "1", "--max-rss", "1073741825"],
            "--max-rss: max_rss is 1125899907891200, expected at most 2^50 bytes (1 PiB)",
        ),
        (
            "preforking",
            vec!["0", "--start-children", "18446744073709551615"],
            "--start-children: start_children is 18446744073709551615, expected 1 to 65536",
        ),
        (
            "forking",
            vec!["0", "--warm-workers", "65537"],
            "--warm-workers: warm_workers is 65537, expected 1 to 65536",
        ),
        (
            "preforking",
            vec!["0", "--shutdown-timeout", "18446744073709551615"],
            "--shutdown-timeout: shutdown_timeout is 18446744073709551615s, expected at most 1 day",
        ),
        (
            "preforking",
            vec!["0", "--max-restarts", "3", "--restart-window", "31536001"],
            "--restart-window: max_restarts window is 31536001s, expected at most 1 year",
        ),
        (
            "preforking",
            vec!["0", "--requests", "9007199254740993"],
            "--requests: requests is 9007199254740993, expected at most 2^53",
        ),
    ] {
        let (code, stderr) = run_failing(example, &args);
        assert_eq!(code, 2, "{example} {args:?}: {stderr}");
        assert!(stderr.contains(message), "{example} {args:?}: {stderr}");
    }
}
