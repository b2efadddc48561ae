//! One Service's pass: plan it, have the announcer carry the plan out, settle the outcome,
//! post its events and start its write; and the withdrawal of a Service that is gone.

use super::*;

impl Controller {
    pub(super) async fn process_service(&mut self, key: &str) {
        let svc = self.service(key);
        if !self.intake.admit(key, svc.as_deref()) {
            return;
        }
        let Some(svc) = svc else {
            self.service_gone(key).await;
            return;
        };
        let previous = self.previous_ingress.get(key).cloned().unwrap_or_default();
        let healthy_nodes = self.healthy_nodes(key);
        let view = self.election.view();
        let settings = self.config.as_ref().and_then(|c| c.settings.clone());
        let node = self.settings.node.clone();
        let plan = {
            let announcer = &self.announcer;
            let holds = |ip: IpAddr| announcer.holds(ip);
            let oracle = Oracle {
                view: &view,
                now: Instant::now(),
                holds: &holds,
                metrics: &self.metrics,
            };
            let ctx = PlanContext {
                node: &node,
                settings: settings.as_ref(),
                interfaces: &self.net.interfaces,
                pools: &self.pools,
                election: &oracle,
                healthy_nodes: &healthy_nodes,
            };
            plan::plan_service(&svc, &previous, &ctx)
        };
        if plan.ingress.is_empty() {
            self.previous_ingress.remove(key);
        } else {
            self.previous_ingress
                .insert(key.to_owned(), plan.ingress.clone());
        }
        let preferred = annotations::node_affinity_requested(
            svc.annotations()
                .get(annotations::NODE_AFFINITY)
                .map(String::as_str),
            svc.annotations()
                .get(annotations::ALLOW_SHARED_IP)
                .map(String::as_str),
        )
        .then(|| healthy_nodes.clone());
        let garp_settings = settings.as_ref().and_then(|s| s.garp);
        let mut applied = Vec::with_capacity(plan.decisions.len());
        for decision in &plan.decisions {
            match decision {
                Decision::Local { .. } => {
                    self.metrics.election_wins.inc();
                }
                Decision::Withdraw {
                    ip,
                    reason: WithdrawReason::LostElection,
                } => {
                    self.metrics.election_losses.inc();
                    tracing::debug!(op = "announce", service = key, ip = %ip, "notWinner");
                }
                _ => {}
            }
            let job = match (decision, garp_settings) {
                (Decision::Local { garp: true, .. }, Some(g)) => Some(GarpJob {
                    settings: g,
                    preferred: preferred.clone(),
                }),
                _ => None,
            };
            let result = self.announcer.apply(key, decision, &self.net, job).await;
            self.log_applied(key, decision, &result).await;
            applied.push(result);
        }
        let outcome = outcome::settle(&svc, &node, &plan, &applied);
        if outcome.retry {
            self.metrics.update_errors.inc();
            self.retries.schedule(key);
        } else {
            self.retries.forget(key);
        }
        for steal in &outcome.annotations.steals {
            self.metrics
                .slot_steals
                .get_or_create(&StealLabels {
                    from: steal.from.clone(),
                    to: steal.to.clone(),
                })
                .inc();
        }
        if !outcome.events.is_empty() {
            let reference = svc.object_ref(&());
            for e in outcome.events {
                self.events.record(reference.clone(), e);
            }
        }
        if !outcome.annotations.is_empty() || plan.set_etp_cluster {
            self.write(key, &svc, outcome.annotations, plan.set_etp_cluster);
        }
    }

    /// Logs what applying `decision` did; an address that cannot be decided while it
    /// sits on a link that went down is withdrawn here.
    pub(super) async fn log_applied(&mut self, key: &str, decision: &Decision, applied: &Applied) {
        let node = &self.settings.node;
        match (applied, decision) {
            (Applied::Added, Decision::Local { ip, interface, .. }) => {
                tracing::info!(op = "announce", service = key, node = %node, ip = %ip, interface = %interface, "electionWon");
            }
            (
                Applied::Added,
                Decision::Remote {
                    ip,
                    interface,
                    prefix_len,
                    ..
                },
            ) => {
                tracing::info!(op = "announce", service = key, node = %node, ip = %ip, interface = %interface, prefix_len, "announcingNonLocal");
            }
            (Applied::NotHealthy, _) => {}
            (Applied::Failed(message), _) => {
                tracing::warn!(op = "announce", service = key, ip = %decision.ip(), error = %message, "announcement failed");
            }
            (_, Decision::Retry { ip, message }) => {
                if self.announcer.local_on_down_links(&self.net).contains(ip) {
                    self.announcer
                        .withdraw(key, *ip, WithdrawReason::NoLocalInterface)
                        .await;
                }
                tracing::info!(op = "announce", service = key, ip = %ip, error = %message, "cannot decide; retrying");
            }
            (
                _,
                Decision::Withdraw {
                    ip,
                    reason: WithdrawReason::NoLocalInterface,
                },
            ) if self.no_local.insert((key.to_owned(), *ip)) => {
                tracing::info!(op = "announce", service = key, node = %node, ip = %ip, "noLocalInterface");
            }
            _ => {}
        }
        if !matches!(
            decision,
            Decision::Withdraw {
                reason: WithdrawReason::NoLocalInterface,
                ..
            }
        ) {
            self.no_local.remove(&(key.to_owned(), decision.ip()));
        }
    }

    /// The Service is gone from the cache: withdraw what it announced.
    pub(super) async fn service_gone(&mut self, key: &str) {
        self.intake.forget(key);
        self.retries.forget(key);
        self.no_local.retain(|(k, _)| k != key);
        let Some(previous) = self.previous_ingress.remove(key) else {
            return;
        };
        for decision in plan::withdraw_all(&previous, WithdrawReason::ServiceDeleted) {
            self.announcer.apply(key, &decision, &self.net, None).await;
        }
    }

    pub(super) fn service(&self, key: &str) -> Option<Arc<Service>> {
        intake::cached_service(&self.services, key)
    }

    pub(super) fn healthy_nodes(&self, key: &str) -> BTreeSet<String> {
        let Some(names) = self.intake.slices_of(key) else {
            return BTreeSet::new();
        };
        let Some((namespace, _)) = key.split_once('/') else {
            return BTreeSet::new();
        };
        let slices: Vec<Arc<EndpointSlice>> = names
            .iter()
            .filter_map(|n| self.slices.get(&ObjectRef::new(n).within(namespace)))
            .collect();
        endpoints::healthy_nodes(slices.iter().map(|s| s.as_ref()))
    }

    /// Starts the annotation / policy write for a Service (one at a time per Service).
    pub(super) fn write(
        &mut self,
        key: &str,
        svc: &Service,
        changes: AnnotationChanges,
        set_etp_cluster: bool,
    ) {
        let patch = write::service_patch(svc, &changes, set_etp_cluster);
        let api: Api<Service> = Api::namespaced(
            self.client.clone(),
            svc.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = svc.name_any();
        let tx = self.inputs_tx.clone();
        let key = key.to_owned();
        self.intake.echoes.started(&key);
        tokio::spawn(async move {
            let result = write::patch_service(&api, &name, &patch).await;
            let _ = tx.send(Input::Written { key, result });
        });
    }
}
