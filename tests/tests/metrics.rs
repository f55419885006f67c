//! `--metrics-addr` on a real manager and agent: after a rolling update with ingress traffic,
//! `/metrics` of each parses as Prometheus text and its counters moved as they should.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_tests::*;

/// `GET /metrics` at `addr`, as a parsed scrape.
fn scrape(addr: &str) -> Result<prometheus_parse::Scrape> {
    let mut stream = std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("an HTTP response")?;
    ensure!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Ok(prometheus_parse::Scrape::parse(lines)?)
}

/// Every sample's value by its name and labels (`name{k="v"}`).
fn values(scrape: &prometheus_parse::Scrape) -> BTreeMap<String, f64> {
    scrape
        .samples
        .iter()
        .map(|s| {
            let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            labels.sort();
            let key =
                if labels.is_empty() { s.metric.clone() } else { format!("{}{{{}}}", s.metric, labels.join(",")) };
            let value = match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(_) => 0.0,
            };
            (key, value)
        })
        .collect()
}

fn value(all: &BTreeMap<String, f64>, key: &str) -> Result<f64> {
    all.get(key).copied().with_context(|| format!("no sample {key} in {:#?}", all.keys().collect::<Vec<_>>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_and_an_agent_export_what_a_rolling_update_did() -> Result<()> {
    let manager_metrics = free_addr();
    let agent_metrics = free_addr();
    let mut cluster = Cluster::start_with(1, &["--metrics-addr", &manager_metrics]).await?;
    cluster.add_agent_with(&[], &["--metrics-addr", &agent_metrics]).await?;
    let host = cluster.running_addrs()[0].clone();
    let before = values(&scrape(&manager_metrics)?);
    let port = 20_000 + rand::random::<u16>() % 20_000;
    ok(&shoal(
        &host,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--publish",
            &format!("{port}:80"),
            "--update-monitor",
            "1s",
            "shoal/web:1",
        ],
    ));
    // A few requests through the agent's ingress proxy.
    let ingress = cluster.agents[0].ingress(port);
    for _ in 0..5 {
        let mut stream = std::net::TcpStream::connect(&ingress)?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        ensure!(answer.contains("web 1"), "{answer}");
    }
    ok(&shoal(&host, &["service", "update", "--image", "shoal/web:2", "web"]));

    let after = values(&scrape(&manager_metrics)?);
    let moved = |key: &str| -> Result<f64> { Ok(value(&after, key)? - before.get(key).copied().unwrap_or(0.0)) };
    ensure!(moved("shoal_raft_proposals_total")? >= 4.0, "proposals: {}", moved("shoal_raft_proposals_total")?);
    ensure!(value(&after, "shoal_raft_proposal_duration_seconds_count")? > 0.0);
    ensure!(value(&after, "shoal_raft_is_leader")? == 1.0);
    ensure!(value(&after, "shoal_raft_applied_index")? >= value(&before, "shoal_raft_applied_index")? + 4.0);
    ensure!(moved("shoal_scheduler_placements_total")? >= 4.0, "2 tasks, then 2 replacements");
    ensure!(value(&after, "shoal_store_objects{kind=\"service\"}")? == 1.0);
    ensure!(value(&after, "shoal_store_tasks{state=\"running\"}")? == 2.0);
    ensure!(value(&after, "shoal_rollouts{state=\"completed\"}")? >= 1.0);
    ensure!(value(&after, "shoal_dispatcher_sessions")? == 1.0);
    ensure!(value(&after, "shoal_control_loop_pass_duration_seconds_count")? > 0.0);
    ensure!(value(&after, "shoal_rollout_slot_duration_seconds_count")? >= 2.0, "the update's 2 slots");
    ensure!(value(&after, "shoal_rollout_batch_duration_seconds_count")? == 2.0, "its 2 batches, each once");
    ensure!(
        value(&after, "shoal_raft_fsync_duration_seconds_count")?
            > value(&before, "shoal_raft_fsync_duration_seconds_count")?
    );
    ensure!(value(&after, "shoal_rollout_task_failures_total")? == 0.0);
    // No id of any kind in a label.
    for key in after.keys() {
        ensure!(!key.contains("task_id") && !key.contains("service_id"), "{key}");
    }

    let agent = values(&scrape(&agent_metrics)?);
    ensure!(value(&agent, "shoal_agent_docker_call_duration_seconds_count{call=\"start\"}")? >= 4.0, "{agent:#?}");
    ensure!(value(&agent, "shoal_agent_docker_call_duration_seconds_count{call=\"shutdown\"}")? >= 2.0);
    ensure!(value(&agent, "shoal_agent_tasks{state=\"running\"}")? == 2.0);
    ensure!(value(&agent, "shoal_agent_ingress_connections_carried_total")? == 5.0);
    ensure!(value(&agent, "shoal_agent_ingress_received_bytes_total")? >= 5.0 * 18.0);
    ensure!(value(&agent, "shoal_agent_ingress_sent_bytes_total")? > 0.0);

    // The update's timeline as a chart: its two slots, started and monitored.
    let dir = tempfile::tempdir()?;
    let chart = dir.path().join("web.svg");
    let out = shoal(&host, &["rollout", "inspect", "--svg", chart.to_str().unwrap(), "web"]);
    ensure!(out.status.success(), "{}", stderr(&out));
    let svg = std::fs::read_to_string(&chart)?;
    ensure!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"), "{svg}");
    ensure!(svg.matches(r#"class="starting""#).count() == 2 && svg.matches(r#"class="monitor""#).count() == 2, "{svg}");
    ensure!(svg.contains("update of web (revision 1 → 2), completed"), "{svg}");

    // A task no node can take is counted by the kind of reason.
    ok(&shoal(
        &host,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "nowhere",
            "--constraint",
            "node.labels.zone==mars",
            "shoal/busybox:1",
        ],
    ));
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = values(&scrape(&manager_metrics)?)
            .get("shoal_scheduler_unschedulable_total{reason=\"constraints\"}")
            .copied()
            .unwrap_or(0.0);
        if counted >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(counted >= 1.0, "the unplaceable task is counted under reason=constraints");
    ok(&shoal(&host, &["service", "rm", "nowhere"]));

    // An update whose new task fails, rolled back: the failure is counted.
    let out =
        shoal(&host, &["service", "update", "--image", "shoal/fail:1", "--update-failure-action", "rollback", "web"]);
    ensure!(out.status.code() == Some(4), "{}", stderr(&out));
    let failed = values(&scrape(&manager_metrics)?);
    ensure!(value(&failed, "shoal_rollout_task_failures_total")? >= 1.0, "{failed:#?}");
    ensure!(value(&failed, "shoal_rollouts{state=\"rollback_completed\"}")? >= 1.0);

    // Anything but GET /metrics is refused; the endpoint keeps serving.
    let mut stream = std::net::TcpStream::connect(&manager_metrics)?;
    stream.write_all(b"DELETE /metrics HTTP/1.1\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    ensure!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    scrape(&manager_metrics)?;
    Ok(())
}
