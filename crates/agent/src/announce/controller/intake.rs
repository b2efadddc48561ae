//! What the controller's watches and its own writes bring in, turned into work: which
//! Services to plan again, in arrival order and once each, and which inputs change nothing
//! (an update that only touched the announcing annotations, the echo of our own write).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;
use purelb_api::annotations;
use purelb_kube_edge::echoes::WriteEchoes;
use purelb_kube_edge::queue::WorkQueue;

use crate::announce::endpoints::service_of;

/// One unit of the controller's serial work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Work {
    /// Select the LBNodeAgent again.
    Config,
    /// Read the ServiceGroups' pools again.
    Pools,
    /// Plan one Service (`namespace/name`) again.
    Service(String),
}

#[derive(Default)]
pub(super) struct Intake {
    pub(super) queue: WorkQueue<Work>,
    /// Our Service writes under way and their echoes awaited.
    pub(super) echoes: WriteEchoes,
    /// A hash of what matters in each Service (everything but the announcing annotations
    /// and the resourceVersion).
    fingerprints: HashMap<String, u64>,
    /// Service key → names of its EndpointSlices.
    slice_index: HashMap<String, BTreeSet<String>>,
}

impl Intake {
    pub(super) fn enqueue(&mut self, work: Work) {
        self.queue.push(work);
    }

    /// A Service watch event; `services` is the cache after it, `remembered` the Services
    /// this node has announced for (a re-list reports no deletions, so those that are gone
    /// are planned again to be withdrawn).
    pub(super) fn service<'a>(
        &mut self,
        event: &Event<Service>,
        services: &Store<Service>,
        remembered: impl IntoIterator<Item = &'a String>,
    ) {
        match event {
            Event::Apply(s) | Event::InitApply(s) => {
                let key = purelb_api::service::key(s);
                let version = s.metadata.resource_version.as_deref().unwrap_or_default();
                if self.echoes.observed(&key, version) {
                    self.enqueue(Work::Service(key.clone()));
                }
                let fingerprint = fingerprint(s);
                if self.fingerprints.insert(key.clone(), fingerprint) != Some(fingerprint) {
                    self.enqueue(Work::Service(key));
                }
            }
            Event::Delete(s) => {
                let key = purelb_api::service::key(s);
                self.fingerprints.remove(&key);
                self.enqueue(Work::Service(key));
            }
            Event::InitDone => {
                let present: HashSet<String> = services
                    .state()
                    .iter()
                    .map(|s| purelb_api::service::key(s))
                    .collect();
                let gone: Vec<String> = remembered
                    .into_iter()
                    .filter(|k| !present.contains(*k))
                    .cloned()
                    .collect();
                for key in gone.into_iter().chain(self.echoes.relisted()) {
                    self.enqueue(Work::Service(key));
                }
            }
            Event::Init => {}
        }
    }

    /// An EndpointSlice watch event; `slices` is the cache after it.
    pub(super) fn slice(&mut self, event: &Event<EndpointSlice>, slices: &Store<EndpointSlice>) {
        match event {
            Event::Apply(s) | Event::InitApply(s) => {
                if let Some(key) = service_of(s) {
                    self.slice_index
                        .entry(key.clone())
                        .or_default()
                        .insert(s.name_any());
                    self.enqueue(Work::Service(key));
                }
            }
            Event::Delete(s) => {
                if let Some(key) = service_of(s) {
                    if let Some(names) = self.slice_index.get_mut(&key) {
                        names.remove(&s.name_any());
                        if names.is_empty() {
                            self.slice_index.remove(&key);
                        }
                    }
                    self.enqueue(Work::Service(key));
                }
            }
            Event::InitDone => self.rebuild_slice_index(slices),
            Event::Init => {}
        }
    }

    /// Indexes every cached EndpointSlice by its Service.
    pub(super) fn rebuild_slice_index(&mut self, slices: &Store<EndpointSlice>) {
        self.slice_index.clear();
        for s in slices.state() {
            if let Some(key) = service_of(&s) {
                self.slice_index
                    .entry(key)
                    .or_default()
                    .insert(s.name_any());
            }
        }
    }

    /// The names of the EndpointSlices of Service `key`.
    pub(super) fn slices_of(&self, key: &str) -> Option<&BTreeSet<String>> {
        self.slice_index.get(key)
    }

    /// Whether Service `key` may be planned now: not while our write to it is under way or
    /// the cache still holds the version before it. Such work is deferred and queued again
    /// once the write's echo (or a re-list) is in.
    /// `cached` is the Service as the cache holds it (`None`: gone).
    pub(super) fn admit(&mut self, key: &str, cached: Option<&Service>) -> bool {
        let version = cached.and_then(|s| s.metadata.resource_version.as_deref());
        self.echoes.admit(key, version)
    }

    /// Our write to Service `key` finished, producing `version` (`None`: failed or nothing
    /// written).
    pub(super) fn written(&mut self, key: &str, version: Option<String>) {
        if self.echoes.finished(key, version) {
            self.enqueue(Work::Service(key.to_owned()));
        }
    }

    /// Service `key` is gone and withdrawn: its next appearance is new.
    pub(super) fn forget(&mut self, key: &str) {
        self.fingerprints.remove(key);
    }
}

/// The cached Service `key` (`namespace/name`).
pub(super) fn cached_service(services: &Store<Service>, key: &str) -> Option<Arc<Service>> {
    let (namespace, name) = key.split_once('/')?;
    services.get(&ObjectRef::new(name).within(namespace))
}

/// A hash of the parts of a Service the agent's decisions depend on: spec,
/// status, and annotations other than the announcing ones.
fn fingerprint(s: &Service) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(&s.spec)
        .unwrap_or_default()
        .hash(&mut h);
    serde_json::to_string(&s.status)
        .unwrap_or_default()
        .hash(&mut h);
    for (k, v) in s.annotations() {
        if !annotations::is_announcing_key(k) {
            k.hash(&mut h);
            v.hash(&mut h);
        }
    }
    s.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector::{self, store::Writer};
    use serde_json::json;

    use super::*;

    fn service(annotations: serde_json::Value, etp: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "1", "annotations": annotations},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.4"}]}},
        }))
        .unwrap()
    }

    #[test]
    fn announcing_annotations_and_versions_do_not_change_the_fingerprint() {
        let a = service(json!({"purelb.io/allocated-by": "PureLB"}), "Cluster");
        let mut b = service(
            json!({"purelb.io/allocated-by": "PureLB", "purelb.io/announcing-IPv4": "n,eth0,198.51.100.4"}),
            "Cluster",
        );
        b.metadata.resource_version = Some("2".into());
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let c = service(
            json!({"purelb.io/allocated-by": "PureLB", "purelb.io/allow-local": ""}),
            "Cluster",
        );
        assert_ne!(fingerprint(&a), fingerprint(&c));
        let d = service(json!({"purelb.io/allocated-by": "PureLB"}), "Local");
        assert_ne!(fingerprint(&a), fingerprint(&d));
    }

    fn slice(name: &str, service: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": [],
        }))
        .unwrap()
    }

    fn version(mut s: Service, v: &str) -> Service {
        s.metadata.resource_version = Some(v.into());
        s
    }

    fn named(mut s: Service, name: &str) -> Service {
        s.metadata.name = Some(name.into());
        s
    }

    /// The controller's intake fed the way its watches feed it: each event goes into a real
    /// reflector store first, then to the intake; the queued work is taken as the
    /// controller's loop takes it, admission included.
    struct Replay {
        services: (Store<Service>, Writer<Service>),
        slices: (Store<EndpointSlice>, Writer<EndpointSlice>),
        remembered: Vec<String>,
        intake: Intake,
    }

    impl Replay {
        fn new() -> Self {
            let (s, sw) = reflector::store();
            let (e, ew) = reflector::store();
            Self {
                services: (s, sw),
                slices: (e, ew),
                remembered: Vec::new(),
                intake: Intake::default(),
            }
        }

        fn service(&mut self, event: Event<Service>) -> Vec<String> {
            self.services.1.apply_watcher_event(&event);
            self.intake
                .service(&event, &self.services.0, &self.remembered);
            self.planned()
        }

        fn slice(&mut self, event: Event<EndpointSlice>) -> Vec<String> {
            self.slices.1.apply_watcher_event(&event);
            self.intake.slice(&event, &self.slices.0);
            self.planned()
        }

        /// The Services the loop would plan now, in order; deferred ones are left out.
        fn planned(&mut self) -> Vec<String> {
            let mut planned = Vec::new();
            while let Some(work) = self.intake.queue.pop() {
                if let Work::Service(key) = work
                    && self
                        .intake
                        .admit(&key, cached_service(&self.services.0, &key).as_deref())
                {
                    planned.push(key);
                }
            }
            planned
        }
    }

    #[test]
    fn a_recorded_watch_sequence_plans_each_service_exactly_when_it_must() {
        let branded = json!({"purelb.io/allocated-by": "PureLB"});
        let claimed_by = |node: &str| json!({"purelb.io/allocated-by": "PureLB", "purelb.io/announcing-IPv4": format!("{node},eth0,198.51.100.4")});
        let web = |annotations: serde_json::Value, etp: &str, v: &str| {
            version(service(annotations, etp), v)
        };
        let mut r = Replay::new();

        // The initial list: each Service planned as it arrives.
        assert!(r.service(Event::Init).is_empty());
        assert_eq!(
            r.service(Event::InitApply(web(branded.clone(), "Cluster", "1"))),
            ["ns/web"]
        );
        let api = named(web(branded.clone(), "Cluster", "1"), "api");
        assert_eq!(r.service(Event::InitApply(api)), ["ns/api"]);
        assert!(r.service(Event::InitDone).is_empty());
        r.remembered = vec!["ns/web".into(), "ns/api".into()];

        // Another node claimed its announcing slot: nothing to plan.
        assert!(
            r.service(Event::Apply(web(claimed_by("b"), "Cluster", "2")))
                .is_empty()
        );

        // Our own write is under way: a change meanwhile waits for the write and its echo.
        r.intake.echoes.started("ns/web");
        assert!(
            r.service(Event::Apply(web(branded.clone(), "Local", "3")))
                .is_empty()
        );
        r.intake.written("ns/web", Some("4".into()));
        assert!(
            r.planned().is_empty(),
            "the cache is still behind the write"
        );
        assert_eq!(
            r.service(Event::Apply(web(claimed_by("a"), "Local", "4"))),
            ["ns/web"]
        );

        // An EndpointSlice of the Service, then its deletion: planned each time.
        assert_eq!(r.slice(Event::Apply(slice("web-1", "web"))), ["ns/web"]);
        let names = BTreeSet::from(["web-1".to_owned()]);
        assert_eq!(r.intake.slices_of("ns/web"), Some(&names));
        assert_eq!(r.slice(Event::Delete(slice("web-1", "web"))), ["ns/web"]);
        assert_eq!(r.intake.slices_of("ns/web"), None);

        // A re-list that no longer shows `api` (deleted while the watch was down): it is
        // planned so its addresses are withdrawn; `web`, unchanged, is not.
        assert!(r.service(Event::Init).is_empty());
        assert!(
            r.service(Event::InitApply(web(claimed_by("a"), "Local", "4")))
                .is_empty()
        );
        assert_eq!(r.service(Event::InitDone), ["ns/api"]);
        // Planned and found gone, its addresses are withdrawn and it is forgotten.
        r.intake.forget("ns/api");
        r.remembered.retain(|k| k != "ns/api");

        // A write whose echo the watch never brings (a re-list skipped it) holds the Service
        // back only until the re-list is complete.
        r.intake.echoes.started("ns/web");
        r.intake.written("ns/web", Some("9".into()));
        assert!(
            r.service(Event::Apply(web(branded.clone(), "Cluster", "10")))
                .is_empty()
        );
        assert!(r.service(Event::Init).is_empty());
        assert!(
            r.service(Event::InitApply(web(branded, "Cluster", "10")))
                .is_empty()
        );
        assert_eq!(r.service(Event::InitDone), ["ns/web"]);
    }
}
