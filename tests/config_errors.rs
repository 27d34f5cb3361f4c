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
