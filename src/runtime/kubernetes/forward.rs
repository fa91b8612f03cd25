//! Port-forwards through the API server, for an agentdeck running outside the cluster (an
//! operator's laptop over SSH): a loopback listener per sandbox whose connections are tunnelled
//! to the pod's harness port.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::task::JoinHandle;

struct Forward {
    pod_uid: String,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct Forwards {
    open: Mutex<HashMap<(String, String), Forward>>,
}

impl Drop for Forwards {
    fn drop(&mut self) {
        if let Ok(open) = self.open.lock() {
            for f in open.values() {
                f.task.abort();
            }
        }
    }
}

impl Forwards {
    /// The loopback address that reaches `pod`'s `port`, opening a forward if needed (a new
    /// pod, as after a restart, gets a new forward).
    pub async fn ensure(
        &self,
        pods: Api<Pod>,
        namespace: &str,
        pod: &str,
        pod_uid: &str,
        port: u16,
    ) -> std::io::Result<SocketAddr> {
        let key = (namespace.to_string(), pod.to_string());
        if let Ok(open) = self.open.lock()
            && let Some(f) = open.get(&key)
            && f.pod_uid == pod_uid
            && !f.task.is_finished()
        {
            return Ok(f.addr);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let name = pod.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let pods = pods.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let mut forwarder = match pods.portforward(&name, &[port]).await {
                        Ok(f) => f,
                        Err(err) => {
                            tracing::warn!(pod = %name, %err, "port-forward failed");
                            return;
                        }
                    };
                    let Some(mut upstream) = forwarder.take_stream(port) else {
                        return;
                    };
                    if let Err(err) = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await
                    {
                        tracing::debug!(pod = %name, %err, "port-forward connection ended");
                    }
                    drop(upstream);
                    let _ = forwarder.join().await;
                });
            }
        });
        if let Ok(mut open) = self.open.lock()
            && let Some(old) = open.insert(
                key,
                Forward {
                    pod_uid: pod_uid.to_string(),
                    addr,
                    task,
                },
            )
        {
            old.task.abort();
        }
        Ok(addr)
    }

    pub fn close(&self, namespace: &str, pod: &str) {
        if let Ok(mut open) = self.open.lock()
            && let Some(f) = open.remove(&(namespace.to_string(), pod.to_string()))
        {
            f.task.abort();
        }
    }
}
