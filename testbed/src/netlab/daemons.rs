//! Routing daemons started inside a lab namespace: FRR, BIRD 2, GoBGP.
//! Each instance has its own directory (`<lab dir>/<ns>/<daemon>/`) for
//! config, pid files, control sockets and logs.

use super::cmd;
use super::{Ns, Proc, wait_for, wait_until};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long a daemon may take to answer on its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Debian's `frr` package puts the daemons.
const FRR_DIR: &str = "/usr/lib/frr";

fn make_dir(ns: &Ns, sub: &str) -> Result<PathBuf> {
    let dir = ns.dir().join(sub);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("path {} is not UTF-8", p.display()))
}

/// Polls `ready` until it returns `Ok(true)`, failing at once (with the
/// log's tail) if one of `procs` exits meanwhile.
fn wait_ready(procs: &[Proc], what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let mut exited = None;
    let res = wait_until(START_TIMEOUT, what, || {
        if let Some(e) = procs.iter().find_map(|p| p.ensure_running().err()) {
            exited = Some(e);
            return Ok(true);
        }
        ready()
    });
    match exited {
        Some(e) => Err(e.context(format!("while waiting for {what}"))),
        None => res,
    }
}

// ---------------------------------------------------------------- FRR ---

/// The active next hops of the selected route for `prefix` in zebra's answer
/// to `show ip[v6] route <prefix> json`, sorted and deduplicated.
pub fn rib_next_hops(route_json: &Value, prefix: &str) -> Vec<String> {
    let mut hops: Vec<String> = route_json[prefix]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["selected"] == true)
        .flat_map(|r| r["nexthops"].as_array().cloned().unwrap_or_default())
        .filter(|h| h["active"] == true)
        .filter_map(|h| h["ip"].as_str().map(str::to_owned))
        .collect();
    hops.sort();
    hops.dedup();
    hops
}

/// An FRR instance (zebra, staticd, bgpd) in one namespace. Talk to it with
/// [`vtysh`](Self::vtysh), which reaches only this instance.
#[derive(Debug, Clone)]
pub struct Frr {
    ns: Ns,
    dir: PathBuf,
    procs: Vec<Proc>,
}

impl Frr {
    pub(crate) fn start(ns: &Ns, config: &str) -> Result<Frr> {
        let dir = make_dir(ns, "frr")?;
        let d = path_str(&dir)?.to_owned();
        let conf = dir.join("frr.conf");
        write(&conf, config)?;
        let conf_s = path_str(&conf)?.to_owned();
        // vtysh knows every daemon's commands: a dry run catches typos that
        // each daemon, reading only its own part, would log and skip.
        let mut check = Command::new("vtysh");
        check.args(["--vty_socket", &d, "-C", "-f", &conf_s]);
        cmd::run(&mut check).context("FRR config rejected by `vtysh -C`")?;

        let zserv = format!("{d}/zserv.api");
        let mut frr = Frr {
            ns: ns.clone(),
            dir: dir.clone(),
            procs: Vec::new(),
        };
        for daemon in ["zebra", "staticd", "bgpd"] {
            let bin = format!("{FRR_DIR}/{daemon}");
            let pid_file = format!("{d}/{daemon}.pid");
            let argv = [
                bin.as_str(),
                "-f",
                &conf_s,
                "--vty_socket",
                &d,
                "-i",
                &pid_file,
                "-z",
                &zserv,
                // No TCP vty.
                "-P",
                "0",
                "--log",
                "stdout",
                "--limit-fds",
                "1024",
                // Stay root; frrvty as primary group satisfies FRR's
                // "user must be in the vty group" check without touching
                // /etc/group.
                "-u",
                "root",
                "-g",
                "frrvty",
            ];
            let proc = ns.spawn(&format!("frr/{daemon}"), &argv)?;
            frr.procs.push(proc);
            let sock = dir.join(format!("{daemon}.vty"));
            let zserv_path = PathBuf::from(&zserv);
            wait_ready(
                &frr.procs,
                &format!("FRR {daemon} in {}", ns.name()),
                || Ok(sock.exists() && (daemon != "zebra" || zserv_path.exists())),
            )?;
        }
        wait_ready(&frr.procs, &format!("vtysh in {}", ns.name()), || {
            frr.vtysh("show version").map(|_| true)
        })?;
        Ok(frr)
    }

    pub fn ns(&self) -> &Ns {
        &self.ns
    }

    /// The instance dir: frr.conf, `*.vty` sockets, pid files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// zebra, staticd, bgpd.
    pub fn procs(&self) -> &[Proc] {
        &self.procs
    }

    fn vtysh_cmd(&self) -> Result<Command> {
        let mut c = Command::new("vtysh");
        c.args(["--vty_socket", path_str(&self.dir)?]);
        Ok(c)
    }

    /// Output of one vtysh command (`show ...`). vtysh errors (`% Unknown
    /// command`, daemon not answering) are errors.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        let mut c = self.vtysh_cmd()?;
        c.args(["-c", command]);
        let desc = cmd::describe(&c);
        let out = cmd::output(&mut c, None)?;
        let text = cmd::check(&desc, out)?;
        if text.trim_start().starts_with('%') {
            bail!("`{desc}`: {}", text.trim());
        }
        Ok(text)
    }

    /// A `... json` vtysh command, parsed.
    pub fn vtysh_json(&self, command: &str) -> Result<Value> {
        let text = self.vtysh(command)?;
        serde_json::from_str(&text)
            .with_context(|| format!("vtysh `{command}` did not print JSON: {text}"))
    }

    /// Applies config lines in `configure terminal` mode, e.g.
    /// `&["router bgp 65001", "neighbor 198.51.100.9 remote-as 65009"]`.
    pub fn configure(&self, lines: &[&str]) -> Result<()> {
        let mut c = self.vtysh_cmd()?;
        c.args(["-c", "configure terminal"]);
        for l in lines {
            c.args(["-c", l]);
        }
        let desc = cmd::describe(&c);
        let text = cmd::check(&desc, cmd::output(&mut c, None)?)?;
        if text.lines().any(|l| l.trim_start().starts_with('%')) {
            bail!("`{desc}`: {}", text.trim());
        }
        Ok(())
    }

    /// bgpd's state for `peer` ("Established", "Active", ...), `None` if
    /// bgpd has no such neighbor.
    pub fn bgp_state(&self, peer: &str) -> Result<Option<String>> {
        let v = self.vtysh_json(&format!("show bgp neighbors {peer} json"))?;
        Ok(v.get(peer)
            .and_then(|n| n.get("bgpState"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    /// Waits until the session with `peer` is Established.
    pub fn wait_established(&self, peer: &str, timeout: Duration) -> Result<()> {
        wait_until(
            timeout,
            &format!("FRR in {} established with {peer}", self.ns.name()),
            || Ok(self.bgp_state(peer)?.as_deref() == Some("Established")),
        )
        .map_err(|e| self.with_summary(e))
    }

    /// The next hops zebra installed for `prefix`, sorted (empty when there
    /// is no such route): where the router forwards. `prefix` in any spelling.
    pub fn rib_next_hops(&self, prefix: &str) -> Result<Vec<String>> {
        // FRR keys routes by the canonical spelling (2001:db8:2::/64, not 2001:db8:2:0::/64).
        let prefix = match prefix.split_once('/') {
            Some((addr, len)) => match addr.parse::<std::net::IpAddr>() {
                Ok(a) => format!("{a}/{len}"),
                Err(_) => prefix.to_owned(),
            },
            None => prefix.to_owned(),
        };
        let afi = if prefix.contains(':') { "ipv6" } else { "ip" };
        let v = self.vtysh_json(&format!("show {afi} route {prefix} json"))?;
        Ok(rib_next_hops(&v, &prefix))
    }

    /// The `show bgp ipv4 unicast json` / `ipv6` route entry for `prefix`
    /// (a JSON array of paths), if present.
    pub fn bgp_route(&self, prefix: &str) -> Result<Option<Value>> {
        let afi = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let v = self.vtysh_json(&format!("show bgp {afi} unicast json"))?;
        Ok(v.get("routes").and_then(|r| r.get(prefix)).cloned())
    }

    /// Waits until bgpd has a route for `prefix`; returns its paths.
    pub fn wait_route(&self, prefix: &str, timeout: Duration) -> Result<Value> {
        wait_for(
            timeout,
            &format!("route {prefix} in FRR in {}", self.ns.name()),
            || self.bgp_route(prefix),
        )
        .map_err(|e| self.with_summary(e))
    }

    fn with_summary(&self, e: anyhow::Error) -> anyhow::Error {
        match self.vtysh("show bgp summary") {
            Ok(s) => anyhow::anyhow!("{e:#}\nshow bgp summary:\n{}", s.trim_end()),
            Err(_) => e,
        }
    }

    /// Stops the three daemons (SIGTERM, then SIGKILL).
    pub fn stop(&self) -> Result<()> {
        for p in self.procs.iter().rev() {
            p.stop()?;
        }
        Ok(())
    }
}

// --------------------------------------------------------------- BIRD ---

/// A row of `birdc show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdProtocol {
    pub name: String,
    pub proto: String,
    pub table: String,
    /// `up`, `down`, `start`, ...
    pub state: String,
    pub since: String,
    /// For BGP: `Established`, `Active`, `Connect`, ... (possibly followed
    /// by details).
    pub info: String,
}

/// Parses `birdc show protocols` output (with or without the `BIRD x.y
/// ready.` banner).
pub fn parse_bird_protocols(text: &str) -> Vec<BirdProtocol> {
    let mut out = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"Name") && words.get(1) == Some(&"Proto") {
            in_table = true;
            continue;
        }
        if !in_table || words.len() < 4 {
            continue;
        }
        // "Since" is a time, or a date followed by a time.
        let mut i = 4;
        let mut since = Vec::new();
        while let Some(w) = words.get(i) {
            let timeish = w.chars().next().is_some_and(|c| c.is_ascii_digit())
                && w.chars().all(|c| c.is_ascii_digit() || ":.-".contains(c));
            if !timeish || since.len() == 2 {
                break;
            }
            since.push(*w);
            i += 1;
        }
        out.push(BirdProtocol {
            name: words[0].to_owned(),
            proto: words[1].to_owned(),
            table: words[2].to_owned(),
            state: words[3].to_owned(),
            since: since.join(" "),
            info: words[i..].join(" "),
        });
    }
    out
}

/// A BIRD 2 instance in one namespace.
#[derive(Debug, Clone)]
pub struct Bird {
    ns: Ns,
    dir: PathBuf,
    conf: PathBuf,
    sock: PathBuf,
    proc: Proc,
}

impl Bird {
    pub(crate) fn start(ns: &Ns, config: &str) -> Result<Bird> {
        let dir = make_dir(ns, "bird")?;
        let conf = dir.join("bird.conf");
        let sock = dir.join("bird.ctl");
        let pid = dir.join("bird.pid");
        write(&conf, config)?;
        let (conf_s, sock_s, pid_s) = (path_str(&conf)?, path_str(&sock)?, path_str(&pid)?);
        cmd::host(&["bird", "-p", "-c", conf_s]).context("BIRD config rejected by `bird -p`")?;
        let proc = ns.spawn(
            "bird/bird",
            &["bird", "-f", "-c", conf_s, "-s", sock_s, "-P", pid_s],
        )?;
        let bird = Bird {
            ns: ns.clone(),
            dir: dir.clone(),
            conf: conf.clone(),
            sock: sock.clone(),
            proc,
        };
        wait_ready(
            std::slice::from_ref(&bird.proc),
            &format!("BIRD in {}", ns.name()),
            || Ok(bird.birdc("show status")?.contains("up and running")),
        )?;
        Ok(bird)
    }

    pub fn ns(&self) -> &Ns {
        &self.ns
    }

    /// The instance dir: bird.conf, bird.ctl (control socket), pid file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// Output of a birdc command (e.g. `show route all`), banner line
    /// removed. BIRD has no JSON output.
    pub fn birdc(&self, command: &str) -> Result<String> {
        let mut c = Command::new("birdc");
        c.args(["-s", path_str(&self.sock)?]);
        c.args(command.split_whitespace());
        let text = cmd::run(&mut c)?;
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("");
        let body: Vec<&str> = if first.starts_with("BIRD ") && first.ends_with("ready.") {
            lines.collect()
        } else {
            text.lines().collect()
        };
        let body = body.join("\n");
        if body.starts_with("syntax error") || body.starts_with("Unable to connect") {
            bail!("birdc {command}: {body}");
        }
        Ok(body)
    }

    /// `show protocols`, parsed.
    pub fn protocols(&self) -> Result<Vec<BirdProtocol>> {
        Ok(parse_bird_protocols(&self.birdc("show protocols")?))
    }

    /// The `show protocols` row of protocol `name`.
    pub fn protocol(&self, name: &str) -> Result<Option<BirdProtocol>> {
        Ok(self.protocols()?.into_iter().find(|p| p.name == name))
    }

    /// Waits until BGP protocol `name` is up and Established.
    pub fn wait_established(&self, name: &str, timeout: Duration) -> Result<()> {
        wait_until(
            timeout,
            &format!("BIRD protocol {name} in {} established", self.ns.name()),
            || {
                Ok(self
                    .protocol(name)?
                    .is_some_and(|p| p.state == "up" && p.info.starts_with("Established")))
            },
        )
    }

    /// Replaces bird.conf with `config` and reconfigures the running BIRD.
    pub fn reconfigure(&self, config: &str) -> Result<()> {
        let conf_s = path_str(&self.conf)?;
        let new = self.dir.join("bird.conf.new");
        write(&new, config)?;
        cmd::host(&["bird", "-p", "-c", path_str(&new)?])
            .context("BIRD config rejected by `bird -p`")?;
        std::fs::rename(&new, &self.conf).context("replacing bird.conf")?;
        let out = self.birdc(&format!("configure \"{conf_s}\""))?;
        if !out.contains("Reconfigur") {
            bail!("birdc configure: {out}");
        }
        Ok(())
    }

    pub fn stop(&self) -> Result<()> {
        self.proc.stop()
    }
}

// -------------------------------------------------------------- GoBGP ---

/// A gobgpd instance in one namespace; its gRPC API is on a unix socket, so
/// the `gobgp` CLI runs from the host side.
#[derive(Debug, Clone)]
pub struct Gobgp {
    ns: Ns,
    dir: PathBuf,
    target: String,
    proc: Proc,
}

/// GoBGP's `SessionState` enum as printed by `gobgp -j neighbor`.
fn gobgp_state_name(v: &Value) -> Option<String> {
    if let Some(s) = v.as_str() {
        return Some(s.to_ascii_lowercase());
    }
    let name = match v.as_u64()? {
        1 => "idle",
        2 => "connect",
        3 => "active",
        4 => "opensent",
        5 => "openconfirm",
        6 => "established",
        _ => "unknown",
    };
    Some(name.to_owned())
}

impl Gobgp {
    pub(crate) fn start(ns: &Ns, config: &str) -> Result<Gobgp> {
        let dir = make_dir(ns, "gobgp")?;
        let conf = dir.join("gobgpd.toml");
        let sock = dir.join("api.sock");
        write(&conf, config)?;
        let conf_s = path_str(&conf)?;
        cmd::host(&["gobgpd", "-d", "-t", "toml", "-f", conf_s])
            .context("GoBGP config rejected by `gobgpd -d`")?;
        let api = format!("unix://{}", path_str(&sock)?);
        let proc = ns.spawn(
            "gobgp/gobgpd",
            &[
                "gobgpd",
                "-t",
                "toml",
                "-f",
                conf_s,
                "--api-hosts",
                &api,
                "--pprof-disable",
                "-p",
            ],
        )?;
        let g = Gobgp {
            ns: ns.clone(),
            dir,
            target: api,
            proc,
        };
        wait_ready(
            std::slice::from_ref(&g.proc),
            &format!("gobgpd in {}", ns.name()),
            || g.gobgp(&["global"]).map(|_| true),
        )?;
        Ok(g)
    }

    pub fn ns(&self) -> &Ns {
        &self.ns
    }

    /// The instance dir: gobgpd.toml, api.sock.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// `gobgp <args>` against this instance, e.g.
    /// `&["global", "rib", "add", "203.0.113.0/24"]`.
    pub fn gobgp(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("gobgp");
        c.args(["--target", &self.target]).args(args);
        cmd::run(&mut c)
    }

    /// `gobgp -j <args>`, parsed (e.g. `&["neighbor"]`, `&["global", "rib"]`).
    pub fn gobgp_json(&self, args: &[&str]) -> Result<Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.gobgp(&full)?;
        serde_json::from_str(&text)
            .with_context(|| format!("gobgp -j {} did not print JSON: {text}", args.join(" ")))
    }

    /// The session state with `peer` in lower case (`established`,
    /// `active`, ...), `None` if not a configured neighbor.
    pub fn bgp_state(&self, peer: &str) -> Result<Option<String>> {
        let v = self.gobgp_json(&["neighbor"])?;
        let Some(peers) = v.as_array() else {
            return Ok(None);
        };
        Ok(peers
            .iter()
            .find(|p| {
                p.pointer("/conf/neighbor_address").and_then(Value::as_str) == Some(peer)
                    || p.pointer("/state/neighbor_address").and_then(Value::as_str) == Some(peer)
            })
            .and_then(|p| p.pointer("/state/session_state"))
            .and_then(gobgp_state_name))
    }

    /// Waits until the session with `peer` is established.
    pub fn wait_established(&self, peer: &str, timeout: Duration) -> Result<()> {
        wait_until(
            timeout,
            &format!("gobgpd in {} established with {peer}", self.ns.name()),
            || Ok(self.bgp_state(peer)?.as_deref() == Some("established")),
        )
    }

    pub fn stop(&self) -> Result<()> {
        self.proc.stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bird_protocols() {
        let text = "BIRD 2.0.12 ready.\n\
Name       Proto      Table      State  Since         Info\n\
device1    Device     ---        up     12:09:50.123  \n\
static1    Static     master4    up     2026-11-26 12:09:50  \n\
frr        BGP        ---        start  12:09:51.000  Active        Socket: Connection refused\n\
up1        BGP        ---        up     12:09:52.000  Established   \n";
        let p = parse_bird_protocols(text);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].name, "device1");
        assert_eq!(p[0].info, "");
        assert_eq!(p[1].since, "2026-11-26 12:09:50");
        assert_eq!(p[1].table, "master4");
        assert_eq!(p[2].state, "start");
        assert_eq!(p[2].info, "Active Socket: Connection refused");
        assert_eq!(p[3].info, "Established");
    }

    #[test]
    fn gobgp_states() {
        assert_eq!(
            gobgp_state_name(&Value::from(6)).as_deref(),
            Some("established")
        );
        assert_eq!(
            gobgp_state_name(&Value::from("ESTABLISHED")).as_deref(),
            Some("established")
        );
    }
}
