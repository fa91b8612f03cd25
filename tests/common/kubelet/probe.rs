//! Readiness probes: `tcpSocket`, `httpGet` (plain HTTP) and `exec`, as the kubelet runs them.

use super::setup::Launch;
use super::{PodEntry, Shared};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Probes one run of a container (its process `pid`) until `stop`, and sets its readiness.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn readiness(
    shared: Arc<Shared>,
    entry: Arc<PodEntry>,
    index: usize,
    pid: u32,
    container: Container,
    probe: Probe,
    launch: Arc<Launch>,
    stop: CancellationToken,
) {
    let seconds =
        |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(1) as u64);
    let period = seconds(probe.period_seconds, 10);
    let timeout = seconds(probe.timeout_seconds, 1);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.cancelled() => return,
    }
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut successes, mut failures, mut ready) = (0, 0, false);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return,
        }
        let result =
            match tokio::time::timeout(timeout, check(&entry, &container, &probe, &launch)).await {
                Ok(result) => result,
                Err(_) => Err(format!("timeout: no answer within {timeout:?}")),
            };
        if stop.is_cancelled() {
            return;
        }
        let now_ready = match result {
            Ok(()) => {
                successes += 1;
                failures = 0;
                ready || successes >= success_threshold
            }
            Err(message) => {
                failures += 1;
                successes = 0;
                if failures == failure_threshold {
                    shared.event(
                        &entry,
                        Some(&container.name),
                        true,
                        "Unhealthy",
                        format!("Readiness probe failed: {message}"),
                    );
                }
                ready && failures < failure_threshold
            }
        };
        if now_ready != ready {
            ready = now_ready;
            entry.container(index, |c| {
                if c.pid == Some(pid) {
                    c.ready = ready;
                }
            });
        }
    }
}

fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(p) = name.parse::<u16>() {
                return Ok(p);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("the container has no port named {name:?}"))
        }
    }
}

async fn check(
    entry: &PodEntry,
    container: &Container,
    probe: &Probe,
    launch: &Launch,
) -> Result<(), String> {
    let pod_ip = entry.ip.to_string();
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.clone().unwrap_or(pod_ip);
        let port = port(container, &tcp.port)?;
        tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
    } else if let Some(http) = &probe.http_get {
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
        {
            return Err("the test kubelet probes plain HTTP only".to_string());
        }
        let host = http.host.clone().unwrap_or(pod_ip);
        let port = port(container, &http.port)?;
        let path = http.path.clone().unwrap_or_else(|| "/".to_string());
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/test-kubelet\r\n\
             Accept: */*\r\nConnection: close\r\n"
        );
        for header in http.http_headers.iter().flatten() {
            request.push_str(&format!("{}: {}\r\n", header.name, header.value));
        }
        request.push_str("\r\n");
        let url = format!("http://{host}:{port}{path}");
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') && head.len() < 4096 {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("Get \"{url}\": {e}")),
            }
        }
        let line = String::from_utf8_lossy(&head);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("Get \"{url}\": not an HTTP answer"))?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    } else if let Some(exec) = &probe.exec {
        let words: Vec<String> = exec
            .command
            .iter()
            .flatten()
            .map(|w| launch.word(w))
            .collect();
        let Some((program, args)) = words.split_first() else {
            return Err("an exec probe without a command".to_string());
        };
        let status = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&launch.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("exec {program:?}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("command {words:?} exited with {status}"))
        }
    } else {
        Err("the test kubelet models tcpSocket, httpGet and exec probes only".to_string())
    }
}
