//! Warm pools on Kubernetes: keeping each agent's pool objects (see [`super::pool_objects`])
//! as the core wants them, claiming a warm sandbox for a session with a `SandboxClaim` and
//! handing it the session's claim through `pods/exec` (`agentdeck hand-over`, the claim on its
//! standard input: from agentdeck's memory to the pod's, stored nowhere), and how the pools
//! are doing, from the watched pods.

use super::names;
use super::pool_objects::{self, Extension};
use super::{KubernetesRuntime, classify, key_of, not_found};
use crate::bootstrap::handover::Claim;
use crate::runtime::warm::{ClaimStats, Tally};
use crate::runtime::{ListedSandbox, PoolHealth, RuntimeError, SandboxRef, WarmPool};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, AttachParams, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a claim may take to be given a sandbox (agent-sandbox waits up to 2 s for a warm
/// one before it makes one cold).
const BIND_WITHIN: Duration = Duration::from_secs(8);
/// How long a claimed sandbox's pod may take to take its claim; a pod made again meanwhile (the
/// claimed one died before its claim reached it) is given as long again, ...
const HAND_OVER_WITHIN: Duration = Duration::from_secs(20);
/// ... up to this in all.
const HAND_OVER_AT_MOST: Duration = Duration::from_secs(60);
/// A pool's objects are applied again after this even when nothing changed (someone may have
/// edited or deleted them).
const REAPPLY: Duration = Duration::from_secs(300);
/// After the cluster said it has no extensions, how long before asking again.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(60);
/// A claim is looked at again after this at first, then half as long again each time up to
/// [`POLL_MOST`]: a burst of claims does not ask the API server hundreds of times a second.
const POLL: Duration = Duration::from_millis(50);
const POLL_MOST: Duration = Duration::from_millis(400);

/// What this process knows of the pools it keeps and claims from.
#[derive(Default)]
pub struct Pools {
    /// agent → (fingerprint, want, when applied)
    applied: Mutex<HashMap<String, (String, usize, Instant)>>,
    /// The pools wanted at the last sweep of pools no longer wanted, and when.
    swept: Mutex<Option<(BTreeSet<String>, Instant)>>,
    /// Until when the cluster is known to lack agent-sandbox's extensions, and what it said.
    unavailable: Mutex<Option<(Instant, String)>>,
    stats: Mutex<HashMap<String, ClaimStats>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(super::MANAGER).force()
}

/// A 404 from an extension's API: the cluster does not serve it.
fn no_extensions(e: &kube::Error) -> Option<RuntimeError> {
    not_found(e).then(|| {
        RuntimeError::Unavailable(format!(
            "the cluster does not serve agent-sandbox's extensions ({}): warm pools need its \
             extensions installed and its controller run with --extensions",
            names::EXTENSIONS_GROUP
        ))
    })
}

impl KubernetesRuntime {
    fn extension(&self, kind: Extension, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &kind.api_resource())
    }

    fn stat(&self, agent: &str, f: impl FnOnce(&mut ClaimStats)) {
        f(lock(&self.pools.stats)
            .entry(agent.to_string())
            .or_default());
    }

    /// Keeps each pool's Secret, SandboxTemplate and SandboxWarmPool as `pools` say, and
    /// removes the pools no longer wanted.
    pub(super) async fn keep(&self, pools: &[WarmPool]) -> Result<(), RuntimeError> {
        if let Some((until, why)) = lock(&self.pools.unavailable).clone()
            && Instant::now() < until
        {
            return Err(RuntimeError::Unavailable(why));
        }
        let ns = self.config.namespace.clone();
        for pool in pools {
            let fresh =
                lock(&self.pools.applied)
                    .get(&pool.agent.id)
                    .is_some_and(|(fp, want, at)| {
                        *fp == pool.fingerprint && *want == pool.want && at.elapsed() < REAPPLY
                    });
            if fresh {
                continue;
            }
            if let Err(e) = self.apply_pool(pool, &ns).await {
                if let RuntimeError::Unavailable(why) = &e {
                    *lock(&self.pools.unavailable) =
                        Some((Instant::now() + UNAVAILABLE_BACKOFF, why.clone()));
                }
                return Err(e);
            }
            lock(&self.pools.applied).insert(
                pool.agent.id.clone(),
                (pool.fingerprint.clone(), pool.want, Instant::now()),
            );
        }
        let wanted: BTreeSet<String> = pools
            .iter()
            .map(|p| names::pool_name(&p.agent.id))
            .collect();
        let sweep = match &*lock(&self.pools.swept) {
            Some((last, at)) => *last != wanted || at.elapsed() > REAPPLY,
            None => true,
        };
        if sweep {
            self.sweep(&ns, &wanted).await?;
            *lock(&self.pools.swept) = Some((wanted, Instant::now()));
        }
        Ok(())
    }

    async fn apply_pool(&self, pool: &WarmPool, ns: &str) -> Result<(), RuntimeError> {
        let name = names::pool_name(&pool.agent.id);
        let secret = pool_objects::secret(pool, ns)?;
        let template = pool_objects::template(pool, &self.config, ns)?;
        let warm_pool = pool_objects::warm_pool(pool, ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        secrets
            .patch(
                &names::secret_name(&name),
                &apply_params(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(|e| classify("applying the warm pool's Secret", e))?;
        self.extension(Extension::Template, ns)
            .patch(&name, &apply_params(), &Patch::Apply(&template))
            .await
            .map_err(|e| {
                no_extensions(&e).unwrap_or_else(|| classify("applying the SandboxTemplate", e))
            })?;
        self.extension(Extension::WarmPool, ns)
            .patch(&name, &apply_params(), &Patch::Apply(&warm_pool))
            .await
            .map_err(|e| {
                no_extensions(&e).unwrap_or_else(|| classify("applying the SandboxWarmPool", e))
            })?;
        tracing::info!(agent = %pool.agent.id, pool = %name, want = pool.want, fingerprint = %pool.fingerprint, "warm pool applied");
        Ok(())
    }

    /// Deletes agentdeck's pools (with their templates and Secrets) that are not wanted now.
    async fn sweep(&self, ns: &str, wanted: &BTreeSet<String>) -> Result<(), RuntimeError> {
        let managed = ListParams::default().labels(&format!(
            "{}={}",
            names::LABEL_MANAGED,
            names::MANAGED_BY
        ));
        let listed = match self.extension(Extension::WarmPool, ns).list(&managed).await {
            Ok(list) => list,
            Err(e) if not_found(&e) => return Ok(()), // no extensions: no pools to remove
            Err(e) => return Err(classify("listing the warm pools", e)),
        };
        for pool in listed {
            let Some(name) = pool.metadata.name.clone() else {
                continue;
            };
            if wanted.contains(&name) {
                continue;
            }
            tracing::info!(pool = %name, "removing a warm pool no agent wants");
            lock(&self.pools.applied).retain(|agent, _| names::pool_name(agent) != name);
            for kind in [Extension::WarmPool, Extension::Template] {
                match self
                    .extension(kind, ns)
                    .delete(&name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(classify("removing a warm pool", e)),
                }
            }
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            match secrets
                .delete(&names::secret_name(&name), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(classify("removing a warm pool's Secret", e)),
            }
        }
        Ok(())
    }

    /// A warm sandbox of `pool` for the session of `claim`, handed its claim; `None` when the
    /// pool has none ready (the session starts cold, as a Sandbox of its own).
    pub(super) async fn claim(
        &self,
        pool: &WarmPool,
        team: &str,
        claim: &Claim,
    ) -> Result<Option<SandboxRef>, RuntimeError> {
        let started = Instant::now();
        let ns = self.config.namespace.clone();
        let team_ns = self.config.namespace_for(team);
        if team_ns != ns {
            return Err(RuntimeError::Unavailable(format!(
                "warm pools are kept in namespace {ns}, and team {team}'s sandboxes run in \
                 {team_ns}"
            )));
        }
        let (version, watches) = self.synced().await?;
        let pool_name = names::pool_name(&pool.agent.id);
        let fingerprint = names::label_value(&pool.fingerprint);
        let ready = watches
            .pool_pods(&ns)
            .iter()
            .any(|p| p.pool == pool_name && p.fingerprint == fingerprint && p.ready);
        if !ready {
            self.stat(&pool.agent.id, |s| s.misses += 1);
            return Ok(None);
        }

        let claims = self.extension(Extension::Claim, &ns);
        let claim_name = names::claim_name(claim.session);
        let object = pool_objects::claim(claim.session, team, pool, &ns);
        match claims.create(&Default::default(), &object).await {
            Ok(_) => {}
            // Made by an earlier try of this session's start: it is the same claim.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(
                    no_extensions(&e).unwrap_or_else(|| classify("creating the SandboxClaim", e))
                );
            }
        }

        // The sandbox agent-sandbox gives the claim: one of the pool's, or one made cold.
        let deadline = Instant::now() + BIND_WITHIN;
        let mut poll = POLL;
        let bound = loop {
            let current = claims
                .get_opt(&claim_name)
                .await
                .map_err(|e| classify("reading the SandboxClaim", e))?;
            let name = current
                .as_ref()
                .and_then(|c| c.data["status"]["sandbox"]["name"].as_str())
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            if name.is_some() || Instant::now() > deadline {
                break name;
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 3 / 2).min(POLL_MOST);
        };
        let bound_after = started.elapsed();
        let sandboxes = self.sandboxes(version, &ns);
        let warm = match &bound {
            Some(name) => sandboxes
                .get_opt(name)
                .await
                .map_err(|e| classify("reading the claimed Sandbox", e))?
                .filter(|s| {
                    s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(names::LABEL_LAUNCH_TYPE))
                        .is_some_and(|t| t == "warm")
                })
                .and(bound.clone()),
            None => None,
        };
        let Some(name) = warm else {
            // Someone else's claim took the last one: this session starts cold as a Sandbox of
            // its own (the one agent-sandbox made for the claim would wait for a hand-over).
            tracing::info!(session = %claim.session, bound = ?bound, "the warm pool had none for the claim; starting cold");
            self.drop_claim(&ns, &claim_name).await;
            self.stat(&pool.agent.id, |s| s.misses += 1);
            return Ok(None);
        };

        // The session's own labels on the Sandbox (not its pod template, which the claim's
        // controller owns): agentdeck's watches see it from now on as the session's.
        let labels = serde_json::json!({"metadata": {"labels":
            pool_objects::session_labels(claim.session, team, &pool.agent.id)}});
        sandboxes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&labels))
            .await
            .map_err(|e| classify("labelling the claimed Sandbox", e))?;

        let labelled_after = started.elapsed();
        if let Err(why) = self.hand_over(&ns, &name, claim).await {
            tracing::warn!(session = %claim.session, sandbox = %name, %why, "a claimed sandbox did not take its claim; giving it up");
            self.drop_claim(&ns, &claim_name).await;
            return Err(RuntimeError::Failed(format!(
                "the claimed sandbox {ns}/{name} did not take its claim: {why}"
            )));
        }
        let took = started.elapsed();
        self.stat(&pool.agent.id, |s| s.claimed(took));
        tracing::info!(session = %claim.session, sandbox = %name, ?took, ?bound_after, ?labelled_after, "warm sandbox claimed");
        Ok(Some(SandboxRef {
            runtime: "kubernetes".to_string(),
            name: names::sandbox_ref(&ns, &name),
        }))
    }

    /// Hands the claim again to a sandbox taken from a pool whose pod was made again
    /// (restarted, resumed): false for a sandbox made cold, which needs none.
    pub(super) async fn hand_over_again(
        &self,
        sandbox: &SandboxRef,
        claim: &Claim,
    ) -> Result<bool, RuntimeError> {
        let key = key_of(sandbox)?;
        let (_, watches) = self.synced().await?;
        let warm = watches
            .sandbox_label(&key, names::LABEL_LAUNCH_TYPE)
            .is_some();
        if !warm {
            return Ok(false);
        }
        self.hand_over(&key.0, &key.1, claim).await.map_err(|why| {
            RuntimeError::Transient(format!(
                "cannot hand sandbox {}/{} its session's claim again: {why}",
                key.0, key.1
            ))
        })?;
        Ok(true)
    }

    /// Runs `agentdeck hand-over` in the sandbox's pod once it runs, with the claim on its
    /// standard input, until it says the bootstrap took it. A pod that dies first (deleted,
    /// evicted) is made again by agent-sandbox, empty-handed: its successor is handed the claim.
    async fn hand_over(&self, ns: &str, name: &str, claim: &Claim) -> Result<(), String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let started = Instant::now();
        let mut deadline = started + HAND_OVER_WITHIN;
        let mut pod_seen: Option<String> = None;
        loop {
            let (uid, tried) = self.hand_over_once(&pods, name, claim).await;
            if uid.is_some() && uid != pod_seen {
                if pod_seen.is_some() {
                    tracing::info!(sandbox = %name, session = %claim.session, "the claimed sandbox has a new pod; handing the claim to it");
                }
                pod_seen = uid;
                deadline = (Instant::now() + HAND_OVER_WITHIN).min(started + HAND_OVER_AT_MOST);
            }
            match tried {
                Ok(()) => return Ok(()),
                Err(HandOver::Refused(why)) => return Err(why),
                Err(HandOver::NotYet(why)) if Instant::now() > deadline => return Err(why),
                Err(HandOver::NotYet(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn hand_over_once(
        &self,
        pods: &Api<Pod>,
        name: &str,
        claim: &Claim,
    ) -> (Option<String>, Result<(), HandOver>) {
        let pod = match pods.get_opt(name).await {
            Ok(pod) => pod,
            Err(e) => {
                return (
                    None,
                    Err(HandOver::NotYet(format!("cannot read its pod: {e}"))),
                );
            }
        };
        // Not one being deleted (a restart): it may still run, holding the claim, and go.
        let current = pod.filter(|p| p.metadata.deletion_timestamp.is_none());
        let uid = current.as_ref().and_then(|p| p.metadata.uid.clone());
        // An exec that never ends (a connection lost without a close) is tried again, as a
        // broken one is.
        let tried = tokio::time::timeout(
            HAND_OVER_WITHIN,
            self.exec_hand_over(pods, name, claim, current),
        )
        .await
        .unwrap_or_else(|_| {
            Err(HandOver::NotYet(format!(
                "agentdeck hand-over did not end within {HAND_OVER_WITHIN:?}"
            )))
        });
        (uid, tried)
    }

    async fn exec_hand_over(
        &self,
        pods: &Api<Pod>,
        name: &str,
        claim: &Claim,
        current: Option<Pod>,
    ) -> Result<(), HandOver> {
        let running = current
            .and_then(|p| p.status?.container_statuses)
            .into_iter()
            .flatten()
            .any(|c| c.name == names::CONTAINER && c.state.is_some_and(|s| s.running.is_some()));
        if !running {
            return Err(HandOver::NotYet("its pod is not running".into()));
        }
        let argv = vec![
            pool_objects::program(&self.config),
            "hand-over".to_string(),
            "--dir".to_string(),
            names::HANDOVER_DIR.to_string(),
        ];
        let params = AttachParams {
            container: Some(names::CONTAINER.to_string()),
            stdin: true,
            stdout: false,
            stderr: true,
            tty: false,
            ..AttachParams::default()
        };
        let mut process = pods
            .exec(name, argv, &params)
            .await
            .map_err(|e| HandOver::NotYet(format!("pods/exec: {e}")))?;
        let mut line = claim.to_bytes();
        line.push(b'\n');
        if let Some(mut stdin) = process.stdin() {
            use tokio::io::AsyncWriteExt;
            stdin
                .write_all(&line)
                .await
                .map_err(|e| HandOver::NotYet(format!("cannot send the claim: {e}")))?;
            let _ = stdin.flush().await;
        }
        let mut errors = String::new();
        if let Some(stderr) = process.stderr() {
            use tokio::io::AsyncReadExt;
            let _ = stderr.take(4096).read_to_string(&mut errors).await;
        }
        let status = match process.take_status() {
            Some(status) => status.await,
            None => None,
        };
        let said = crate::sanitize::line(errors.trim());
        match status.map(|s| super::exec::exit_of(&s)) {
            Some(crate::runtime::ShellExit::Code(0)) => Ok(()),
            Some(crate::runtime::ShellExit::Code(3)) => Err(HandOver::Refused(said)),
            Some(crate::runtime::ShellExit::Code(code)) => Err(HandOver::NotYet(format!(
                "agentdeck hand-over exited with {code}: {said}"
            ))),
            Some(crate::runtime::ShellExit::Failed(why)) => {
                Err(HandOver::Refused(format!("{why} {said}")))
            }
            None => Err(HandOver::NotYet(
                "the exec connection closed before it ended".into(),
            )),
        }
    }

    /// Deletes a claim (and so the Sandbox it holds); a failure is only logged (the
    /// reconciler removes what no session owns).
    async fn drop_claim(&self, ns: &str, name: &str) {
        match self
            .extension(Extension::Claim, ns)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => tracing::warn!(claim = %name, error = %e, "cannot delete a SandboxClaim"),
        }
    }

    /// Deletes the claim of a Sandbox taken from a pool, if it is one (its Sandbox goes with
    /// it; deleting only the Sandbox would make the claim take another).
    pub(super) async fn release(&self, ns: &str, name: &str) -> Result<(), RuntimeError> {
        let Some((_, watches)) = self.ready.get() else {
            return Ok(());
        };
        let key = (ns.to_string(), name.to_string());
        if watches
            .sandbox_label(&key, names::LABEL_LAUNCH_TYPE)
            .is_none()
        {
            return Ok(());
        }
        let Some(session) = watches.session_of(&key) else {
            return Ok(());
        };
        match self
            .extension(Extension::Claim, ns)
            .delete(&names::claim_name(session), &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(classify("deleting the SandboxClaim", e)),
        }
    }

    /// Sessions' claims whose Sandbox does not carry the session's labels (the process that
    /// claimed died before it labelled it), each listed under its claim's own name: the
    /// reconciler then ends it with its session, as it does a sandbox ([`Self::destroy_claim`]).
    /// None when the cluster serves no extensions.
    pub(super) async fn unlabelled_claims(
        &self,
        labelled: &BTreeSet<(String, Uuid)>,
    ) -> Vec<ListedSandbox> {
        if lock(&self.pools.unavailable)
            .as_ref()
            .is_some_and(|(until, _)| Instant::now() < *until)
        {
            return Vec::new();
        }
        let ns = &self.config.namespace;
        let managed = ListParams::default().labels(&format!(
            "{}={}",
            names::LABEL_MANAGED,
            names::MANAGED_BY
        ));
        let claims = match self.extension(Extension::Claim, ns).list(&managed).await {
            Ok(list) => list.items,
            Err(e) => {
                if let Some(RuntimeError::Unavailable(why)) = no_extensions(&e) {
                    *lock(&self.pools.unavailable) =
                        Some((Instant::now() + UNAVAILABLE_BACKOFF, why));
                } else {
                    tracing::debug!(error = %e, "cannot list the SandboxClaims this pass");
                }
                return Vec::new();
            }
        };
        claims
            .into_iter()
            .filter_map(|claim| {
                let name = claim.metadata.name.clone()?;
                let session = claim
                    .metadata
                    .labels
                    .as_ref()?
                    .get(names::LABEL_SESSION)
                    .and_then(|s| Uuid::parse_str(s).ok())?;
                let bound = claim.data["status"]["sandbox"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if labelled.contains(&(bound, session)) {
                    return None; // listed (and ended) as its Sandbox
                }
                Some(ListedSandbox {
                    session_id: Some(session),
                    sandbox: SandboxRef {
                        runtime: "kubernetes".to_string(),
                        name: names::sandbox_ref(ns, &name),
                    },
                })
            })
            .collect()
    }

    /// Ends a claim listed by [`Self::unlabelled_claims`]: deleting it deletes the Sandbox it
    /// holds.
    pub(super) async fn destroy_claim(&self, ns: &str, name: &str) -> Result<(), RuntimeError> {
        match self
            .extension(Extension::Claim, ns)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(classify("deleting the SandboxClaim", e)),
        }
    }

    /// How each pool is doing: its unclaimed pods ready and starting (as watched), and what
    /// this process's claims found.
    pub(super) async fn pools_health(&self) -> Vec<PoolHealth> {
        let Ok((_, watches)) = self.synced().await else {
            return Vec::new();
        };
        let mut out = Tally::default();
        for pod in watches.pool_pods(&self.config.namespace) {
            if pod.ended {
                continue;
            }
            let pool = out.agent(&pod.agent);
            if pod.ready {
                pool.ready += 1;
            } else {
                pool.starting += 1;
            }
        }
        for (agent, stats) in lock(&self.pools.stats).iter() {
            out.claims(agent, stats);
        }
        out.into_sorted()
    }
}

enum HandOver {
    /// Try again (the pod is not running yet, the connection broke, not taken in time).
    NotYet(String),
    /// It will not take it (claimed by another session, the program is missing).
    Refused(String),
}
