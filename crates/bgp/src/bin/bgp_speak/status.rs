//! The `--status-json` file: the speaker's peers and counts, rewritten atomically (temp file +
//! rename) so a reader never sees half a document.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;
use tracing::{info, warn};

use purelb_bgp::fsm::State;
use purelb_bgp::speaker::{ApplyReport, Speaker};
use purelb_bgp::wire::AfiSafi;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile {
    pub pid: u32,
    pub asn: u32,
    pub router_id: String,
    /// False in the last write, made while stopping.
    pub running: bool,
    /// Local routes currently given to the speaker.
    pub routes: usize,
    /// SIGUSR1 withdrew every route (until the next SIGHUP).
    pub withdrawn: bool,
    pub listening: Vec<String>,
    pub peers: Vec<PeerFile>,
    /// SIGHUPs handled so far.
    pub reloads: u64,
    pub last_reload: Option<Reload>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerFile {
    pub address: IpAddr,
    pub peer_asn: u32,
    pub local_asn: u32,
    pub description: String,
    pub dynamic: bool,
    pub admin_down: bool,
    /// `Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`, `Established`.
    pub state: String,
    /// Seconds Established, while it is.
    pub uptime_seconds: Option<u64>,
    pub peer_id: Option<String>,
    pub families: Vec<String>,
    pub prefixes_sent: usize,
    pub prefixes_received: usize,
    pub last_error: Option<String>,
}

/// The outcome of one SIGHUP.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reload {
    pub event: &'static str,
    pub ok: bool,
    pub error: Option<String>,
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
    pub reset: Vec<IpAddr>,
    pub updated: Vec<IpAddr>,
}

impl Reload {
    pub fn applied(r: &ApplyReport) -> Self {
        Self {
            event: "reload",
            ok: true,
            error: None,
            added: r.added.clone(),
            removed: r.removed.clone(),
            reset: r.reset.clone(),
            updated: r.updated.clone(),
        }
    }

    pub fn failed(error: String) -> Self {
        Self {
            event: "reload",
            ok: false,
            error: Some(error),
            added: Vec::new(),
            removed: Vec::new(),
            reset: Vec::new(),
            updated: Vec::new(),
        }
    }
}

fn family_name(f: &AfiSafi) -> String {
    match *f {
        AfiSafi::IPV4_UNICAST => "ipv4-unicast".into(),
        AfiSafi::IPV6_UNICAST => "ipv6-unicast".into(),
        AfiSafi { afi, safi } => format!("afi{afi}-safi{safi}"),
    }
}

/// Writes the status file and logs peer state changes (which it sees while writing).
pub struct StatusWriter {
    path: PathBuf,
    reloads: u64,
    last_reload: Option<Reload>,
    states: BTreeMap<IpAddr, State>,
}

impl StatusWriter {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            reloads: 0,
            last_reload: None,
            states: BTreeMap::new(),
        }
    }

    pub fn reloaded(&mut self, reload: Reload) {
        self.reloads += 1;
        self.last_reload = Some(reload);
    }

    pub fn write(&mut self, speaker: &Speaker, routes: usize, withdrawn: bool, running: bool) {
        let peers = speaker.peers();
        let (asn, router_id) = speaker.identity();
        let mut states = BTreeMap::new();
        for p in &peers {
            let before = self.states.get(&p.address).copied();
            if before != Some(p.state) {
                info!(peer = %p.address, from = ?before, to = ?p.state, error = ?p.last_error, "peer state");
            }
            states.insert(p.address, p.state);
        }
        self.states = states;
        let file = StatusFile {
            pid: std::process::id(),
            asn,
            router_id: router_id.to_string(),
            running,
            routes,
            withdrawn,
            listening: speaker
                .listening_on()
                .iter()
                .map(ToString::to_string)
                .collect(),
            peers: peers
                .iter()
                .map(|p| PeerFile {
                    address: p.address,
                    peer_asn: p.peer_asn,
                    local_asn: p.local_asn,
                    description: p.description.clone(),
                    dynamic: p.dynamic,
                    admin_down: p.admin_down,
                    state: format!("{:?}", p.state),
                    uptime_seconds: p.uptime().map(|d| d.as_secs()),
                    peer_id: p.peer_id.map(|id| id.to_string()),
                    families: p.families.iter().map(family_name).collect(),
                    prefixes_sent: p.prefixes_sent,
                    prefixes_received: p.prefixes_received,
                    last_error: p.last_error.clone(),
                })
                .collect(),
            reloads: self.reloads,
            last_reload: self.last_reload.clone(),
        };
        if let Err(e) = self.store(&file) {
            warn!(path = %self.path.display(), error = %e, "cannot write the status file");
        }
    }

    fn store(&self, file: &StatusFile) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)
    }
}
