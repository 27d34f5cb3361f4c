//! The status endpoint's formats ([`StatusFormat`]): the text report, JSON
//! and Prometheus text.

use std::fmt::Write as _;

use crate::status::StatusReport;

/// The formats of the status endpoint, chosen by the query string.
///
/// | query | format | content type |
/// |---|---|---|
/// | (none) | [`Text`](Self::Text): the [`StatusReport`]'s `Display` | `text/plain` |
/// | `?json` or `?format=json` | [`Json`](Self::Json): the report's serde form | `application/json` |
/// | `?prometheus` or `?format=prometheus` | [`Prometheus`](Self::Prometheus): text exposition format 0.0.4 | `text/plain; version=0.0.4` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// The human-readable report.
    Text,
    /// JSON, as [`StatusReport`] serialises.
    Json,
    /// Prometheus text exposition format.
    Prometheus,
}

impl StatusFormat {
    /// The format a query string asks for (text unless it names another).
    pub fn from_query(query: &str) -> StatusFormat {
        let mut format = StatusFormat::Text;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = if key == "format" { value } else { key };
            match name {
                "json" => format = StatusFormat::Json,
                "prometheus" | "metrics" => format = StatusFormat::Prometheus,
                _ => {}
            }
        }
        format
    }

    /// The response's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            StatusFormat::Text => "text/plain; charset=utf-8",
            StatusFormat::Json => "application/json",
            StatusFormat::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// Renders `report` in this format.
    pub fn render(self, report: &StatusReport) -> String {
        match self {
            StatusFormat::Text => report.to_string(),
            StatusFormat::Json => {
                let mut json = serde_json::to_string_pretty(report)
                    .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"));
                json.push('\n');
                json
            }
            StatusFormat::Prometheus => prometheus(report),
        }
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The report in Prometheus text format: pool totals (counters survive
/// worker recycling: they live in the shared scoreboard), pool limits, and
/// per worker its state, requests and time in state, labelled by slot and
/// pid.
fn prometheus(report: &StatusReport) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP actix_daemon_{name} {help}");
        let _ = writeln!(out, "# TYPE actix_daemon_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "actix_daemon_{name}{labels} {value}");
        }
    };
    let one = |value: f64| vec![(String::new(), value)];
    let c = &report.counters;
    metric(
        "info",
        "gauge",
        "The daemon: alias, mode, supervisor pid, answering pid.",
        &[(
            format!(
                "{{alias=\"{}\",mode=\"{}\",supervisor_pid=\"{}\",pid=\"{}\"}}",
                label(&report.alias),
                label(report.mode),
                report.supervisor_pid,
                report.pid
            ),
            1.0,
        )],
    );
    metric(
        "requests_total",
        "counter",
        "Requests served by all workers since start.",
        &one(c.requests as f64),
    );
    metric(
        "connections_total",
        "counter",
        "Connections accepted by all workers since start.",
        &one(c.connections as f64),
    );
    let (idle, busy, starting, exiting) = report.tally();
    metric(
        "workers",
        "gauge",
        "Workers by what they do: idle (spares), active (busy), starting, exiting.",
        &[
            ("{state=\"idle\"}".into(), idle as f64),
            ("{state=\"active\"}".into(), busy as f64),
            ("{state=\"starting\"}".into(), starting as f64),
            ("{state=\"exiting\"}".into(), exiting as f64),
        ],
    );
    for (name, help, value) in [
        ("workers_spawned_total", "Workers started.", c.spawned),
        ("workers_exited_total", "Workers reaped.", c.exited),
        (
            "workers_retired_total",
            "Workers recycled: served their requests, or surplus spares.",
            c.retired,
        ),
        (
            "workers_killed_total",
            "Workers killed (SIGKILL at shutdown).",
            c.killed,
        ),
        (
            "workers_killed_externally_total",
            "Workers ended by a signal the supervisor did not send (the OOM killer, an operator's kill -9).",
            c.killed_externally,
        ),
        (
            "workers_misbehaved_total",
            "Workers retired for writing nonsense into the scoreboard.",
            c.misbehaved,
        ),
        (
            "fork_failures_total",
            "Forks that failed and were retried.",
            c.fork_failed,
        ),
        (
            "workers_crashed_total",
            "Workers that failed before they were ready, or crashed after (a crash signal or a non-zero exit).",
            c.crashed,
        ),
    ] {
        metric(name, "counter", help, &one(value as f64));
    }
    metric(
        "babysitter_actions_total",
        "counter",
        "Babysitter interventions by reason.",
        &[
            ("{reason=\"rogue\"}".into(), c.rogue as f64),
            ("{reason=\"hung\"}".into(), c.hung as f64),
            ("{reason=\"memory\"}".into(), c.memory as f64),
            ("{reason=\"vanished\"}".into(), c.vanished as f64),
        ],
    );
    metric(
        "crash_streak",
        "gauge",
        "Young deaths in a row; above 0 the pool is degraded and spawns back off.",
        &one(c.crash_streak as f64),
    );
    metric(
        "degraded",
        "gauge",
        "1 while workers keep dying young.",
        &one(f64::from(u8::from(report.is_degraded()))),
    );
    if let Some(last) = c.last_crash {
        metric(
            "last_crash_status",
            "gauge",
            "How the last young death ended: an exit code, or minus a signal number.",
            &one(last as f64),
        );
    }
    if let Some(limits) = report.limits {
        metric(
            "max_children",
            "gauge",
            "Most workers at once.",
            &one(limits.max_children as f64),
        );
        if let (Some(min), Some(max)) = (limits.min_spare, limits.max_spare) {
            metric(
                "min_spare",
                "gauge",
                "Least idle workers wanted.",
                &one(min as f64),
            );
            metric(
                "max_spare",
                "gauge",
                "Most idle workers kept.",
                &one(max as f64),
            );
        }
        if let Some(n) = limits.requests {
            metric(
                "requests_per_worker",
                "gauge",
                "Requests after which a worker is recycled.",
                &one(n as f64),
            );
        }
    }
    if let Some(queued) = report.queued_requests {
        metric(
            "queued_requests",
            "gauge",
            "Fork per request: requests waiting for a worker.",
            &one(queued as f64),
        );
    }
    metric(
        "shutting_down",
        "gauge",
        "1 while the answering process shuts down.",
        &one(f64::from(u8::from(report.shutting_down))),
    );
    let workers: Vec<_> = report.slots.iter().filter(|s| s.pid != 0).collect();
    let labels = |s: &crate::SlotSnapshot| format!("slot=\"{}\",pid=\"{}\"", s.slot, s.pid);
    metric(
        "worker_state",
        "gauge",
        "Each worker's scoreboard state (its letter: . w r l f e); always 1.",
        &workers
            .iter()
            .map(|s| {
                (
                    format!(
                        "{{{},state=\"{}\"}}",
                        labels(s),
                        label(&s.state.letter().to_string())
                    ),
                    1.0,
                )
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "worker_requests_total",
        "counter",
        "Requests served by each worker.",
        &workers
            .iter()
            .map(|s| (format!("{{{}}}", labels(s)), s.requests as f64))
            .collect::<Vec<_>>(),
    );
    metric(
        "worker_state_seconds",
        "gauge",
        "Time each worker has been in its state.",
        &workers
            .iter()
            .map(|s| (format!("{{{}}}", labels(s)), s.in_state_ms as f64 / 1000.0))
            .collect::<Vec<_>>(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Role, SlotState};

    #[test]
    fn status_formats_come_from_the_query() {
        assert_eq!(StatusFormat::from_query(""), StatusFormat::Text);
        assert_eq!(StatusFormat::from_query("json"), StatusFormat::Json);
        assert_eq!(StatusFormat::from_query("format=json"), StatusFormat::Json);
        assert_eq!(
            StatusFormat::from_query("prometheus"),
            StatusFormat::Prometheus
        );
        assert_eq!(
            StatusFormat::from_query("x=1&prometheus="),
            StatusFormat::Prometheus
        );
        assert_eq!(StatusFormat::from_query("verbose"), StatusFormat::Text);
    }

    fn report() -> StatusReport {
        use crate::{Counters, PoolLimits, SlotId, SlotSnapshot};
        StatusReport {
            alias: "web \"test\"".into(),
            mode: "Pre-forking server",
            role: Role::Worker,
            pid: 11,
            supervisor_pid: 10,
            slot: Some(1),
            limits: Some(PoolLimits {
                max_children: 3,
                min_spare: Some(1),
                max_spare: Some(2),
                requests: Some(50),
                requests_jitter: 0,
            }),
            slots: vec![
                SlotSnapshot {
                    slot: SlotId(0),
                    state: SlotState::Wait,
                    pid: 12,
                    requests: 7,
                    in_state_ms: 1500,
                },
                SlotSnapshot {
                    slot: SlotId(1),
                    state: SlotState::Req,
                    pid: 11,
                    requests: 3,
                    in_state_ms: 2,
                },
                SlotSnapshot {
                    slot: SlotId(2),
                    state: SlotState::Empty,
                    pid: 0,
                    requests: 0,
                    in_state_ms: 0,
                },
            ],
            counters: Counters {
                spawned: 5,
                exited: 3,
                retired: 2,
                requests: 160,
                crashed: 1,
                last_crash: Some(-9),
                killed_externally: 3,
                misbehaved: 4,
                ..Counters::default()
            },
            queued_requests: None,
            paused: None,
            shutting_down: false,
        }
    }

    #[test]
    fn prometheus_text_has_totals_limits_and_workers() {
        let text = prometheus(&report());
        for line in [
            "actix_daemon_requests_total 160",
            "actix_daemon_workers{state=\"idle\"} 1",
            "actix_daemon_workers{state=\"active\"} 1",
            "actix_daemon_workers_spawned_total 5",
            "actix_daemon_workers_retired_total 2",
            "actix_daemon_workers_crashed_total 1",
            "actix_daemon_workers_killed_externally_total 3",
            "actix_daemon_workers_misbehaved_total 4",
            "actix_daemon_last_crash_status -9",
            "actix_daemon_degraded 0",
            "actix_daemon_requests_per_worker 50",
            "actix_daemon_worker_state{slot=\"1\",pid=\"11\",state=\"r\"} 1",
            "actix_daemon_worker_requests_total{slot=\"0\",pid=\"12\"} 7",
            "actix_daemon_worker_state_seconds{slot=\"0\",pid=\"12\"} 1.5",
            "# TYPE actix_daemon_requests_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.contains("alias=\"web \\\"test\\\"\""), "{text}");
        assert!(!text.contains("pid=\"0\""), "empty slots are not workers");
        // Every sample line is `name{labels} number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }

    #[test]
    fn json_and_text_are_the_report_s_own() {
        let r = report();
        let json: serde_json::Value = serde_json::from_str(&StatusFormat::Json.render(&r)).unwrap();
        assert_eq!(json["counters"]["requests"], 160);
        assert_eq!(json["slots"][1]["state"], "req");
        assert_eq!(StatusFormat::Text.render(&r), r.to_string());
    }
}
