//! What tests and the demo run on the cluster: a small web Deployment whose
//! answers name the pod and node, and LoadBalancer Services in front of it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Result;

use super::{Cluster, http_get};
use crate::netlab::wait_for;

/// The lab's web server image (`make images`).
pub const WEB_IMAGE: &str = "localhost/purelb-lab/web:1";

/// Address families of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    Ipv4,
    Ipv6,
    Dual,
}

impl Families {
    /// How many addresses a Service of these families gets.
    pub fn count(self) -> usize {
        match self {
            Families::Dual => 2,
            _ => 1,
        }
    }
}

/// A LoadBalancer Service in front of the pods labelled `app=<app>`, port 80
/// to 8080, with an address from ServiceGroup `group`.
#[derive(Debug, Clone)]
pub struct LbService<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub app: &'a str,
    pub group: &'a str,
    pub families: Families,
    /// `Cluster` or `Local`.
    pub external_traffic_policy: &'a str,
}

impl Cluster {
    /// A Deployment of the web image, spread over the nodes; returns once it
    /// has rolled out.
    pub fn deploy_web(&self, namespace: &str, name: &str, replicas: u32) -> Result<()> {
        self.deploy_web_on(namespace, name, replicas, "{}")
    }

    /// [`deploy_web`](Self::deploy_web) on the nodes `node_selector` (a YAML
    /// map of labels) selects.
    pub fn deploy_web_on(
        &self,
        namespace: &str,
        name: &str,
        replicas: u32,
        node_selector: &str,
    ) -> Result<()> {
        self.apply_yaml(&format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {node_selector}
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: ScheduleAnyway
        labelSelector: {{matchLabels: {{app: {name}}}}}
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {WEB_IMAGE}
        imagePullPolicy: Never
        ports: [{{containerPort: 8080}}]
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
"#
        ))?;
        self.kubectl(&[
            "-n",
            namespace,
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=120s",
        ])?;
        Ok(())
    }

    /// Creates (or updates) the Service and waits for its addresses.
    pub fn lb_service(&self, s: &LbService<'_>) -> Result<Vec<IpAddr>> {
        let (policy, families) = match s.families {
            Families::Dual => ("RequireDualStack", "[IPv4, IPv6]"),
            Families::Ipv6 => ("SingleStack", "[IPv6]"),
            Families::Ipv4 => ("SingleStack", "[IPv4]"),
        };
        self.apply_yaml(&format!(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
  annotations: {{purelb.io/service-group: {group}}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {etp}
  ipFamilyPolicy: {policy}
  ipFamilies: {families}
  selector: {{app: {app}}}
  ports: [{{port: 80, targetPort: 8080, protocol: TCP}}]
"#,
            name = s.name,
            namespace = s.namespace,
            group = s.group,
            etp = s.external_traffic_policy,
            app = s.app,
        ))?;
        self.service_addresses(s.namespace, s.name, s.families.count())
    }

    /// The Service's LoadBalancer addresses, once it has `count` of them.
    pub fn service_addresses(
        &self,
        namespace: &str,
        name: &str,
        count: usize,
    ) -> Result<Vec<IpAddr>> {
        wait_for(
            Duration::from_secs(60),
            &format!("{count} address(es) on {namespace}/{name}"),
            || {
                let out = self.kubectl_text(&[
                    "-n",
                    namespace,
                    "get",
                    "service",
                    name,
                    "-o",
                    "jsonpath={.status.loadBalancer.ingress[*].ip}",
                ])?;
                let ips: Vec<IpAddr> = out
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
                Ok((ips.len() == count).then_some(ips))
            },
        )
    }
}

/// GETs `ip:80` from the network namespace `from` (the host when `None`)
/// until it answers, at most `timeout`; returns the web image's answer
/// (`pod=<name> node=<name> client=<addr>`).
pub fn ask(from: Option<&str>, ip: IpAddr, timeout: Duration) -> Result<String> {
    let addr = SocketAddr::new(ip, 80);
    let who = from.unwrap_or("the host");
    wait_for(timeout, &format!("an answer from {addr} to {who}"), || {
        let body = http_get(from, addr, "/", Duration::from_secs(2))?;
        Ok(answering_pod(&body).map(|_| body.trim().to_owned()))
    })
}

/// `<name>` of `pod=<name>` in the web image's answer.
pub fn answering_pod(body: &str) -> Option<String> {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pod="))
        .map(str::to_owned)
}

/// Requests to one address, every `interval`, on a thread of its own, until
/// [`Prober::finish`]: what a client saw during a failover.
pub struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<ProbeReport>,
}

/// What a [`Prober`] saw.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    pub answered: u32,
    pub failed: u32,
    /// The longest time between two answers (or from the start to the first).
    pub longest_gap: Duration,
    /// Pods that answered, in order of first answer.
    pub pods: Vec<String>,
}

impl Prober {
    /// Starts asking `ip:80` from the network namespace `from` (the host when `None`).
    pub fn start(from: Option<String>, ip: IpAddr, interval: Duration) -> Prober {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut report = ProbeReport::default();
            let mut last_answer = std::time::Instant::now();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = std::time::Instant::now();
                match http_get(from.as_deref(), SocketAddr::new(ip, 80), "/", interval * 10) {
                    Ok(body) => {
                        report.answered += 1;
                        report.longest_gap = report.longest_gap.max(asked - last_answer);
                        last_answer = asked;
                        if let Some(pod) = answering_pod(&body)
                            && !report.pods.contains(&pod)
                        {
                            report.pods.push(pod);
                        }
                    }
                    Err(_) => report.failed += 1,
                }
                std::thread::sleep(interval.saturating_sub(asked.elapsed()));
            }
            report.longest_gap = report.longest_gap.max(last_answer.elapsed());
            report
        });
        Prober { stop, thread }
    }

    /// Stops asking and returns what it saw.
    pub fn finish(self) -> ProbeReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
