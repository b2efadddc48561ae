//! The guard that keeps lab traffic on this machine: an nftables table in the
//! root namespace dropping every packet to a lab range that would leave
//! through an interface the lab did not make (`eth0` above all), output and
//! forwarded alike, with a counter a test reads.

use anyhow::{Context, Result};

use crate::netlab::cmd;
use crate::netlab::host::MGMT_PREFIX;

/// Tables are named `plb_guard_<pid>`; a dead owner's is removed by the next guard.
const TABLE_PREFIX: &str = "plb_guard_";

/// The installed guard; dropping it removes the table.
#[derive(Debug)]
pub struct Guard {
    table: String,
}

impl Guard {
    /// Drops packets to `ranges` (`addr/len`, both families) unless they leave
    /// through `lo`, one of `allowed_ifs`, or a management link of any lab.
    pub fn install(ranges: &[String], allowed_ifs: &[String]) -> Result<Guard> {
        remove_stale_tables();
        let table = format!("{TABLE_PREFIX}{}", std::process::id());
        let (v6, v4): (Vec<&String>, Vec<&String>) = ranges.iter().partition(|r| r.contains(':'));
        let join = |rs: &[&String]| rs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
        let mut allow = String::from("    oifname \"lo\" accept\n");
        for i in allowed_ifs {
            allow.push_str(&format!("    oifname \"{i}\" accept\n"));
        }
        allow.push_str(&format!("    oifname \"{MGMT_PREFIX}*\" accept\n"));
        let chain = |name: &str, hook: &str| {
            format!(
                "  chain {name} {{\n    type filter hook {hook} priority -300; policy accept;\n\
                 {allow}    ip daddr @lab4 counter name leaked drop\n\
                 \x20   ip6 daddr @lab6 counter name leaked drop\n  }}\n"
            )
        };
        let rules = format!(
            "table inet {table} {{}}\ndelete table inet {table}\n\
             table inet {table} {{\n\
             \x20 counter leaked {{}}\n\
             \x20 set lab4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {v4} }} }}\n\
             \x20 set lab6 {{ type ipv6_addr; flags interval; auto-merge; elements = {{ {v6} }} }}\n\
             {output}{forward}}}\n",
            v4 = join(&v4),
            v6 = join(&v6),
            output = chain("output", "output"),
            forward = chain("forward", "forward"),
        );
        nft(&rules).context("installing the lab's traffic guard")?;
        Ok(Guard { table })
    }

    /// Packets the guard has dropped so far.
    pub fn dropped_packets(&self) -> Result<u64> {
        let out = cmd::host(&[
            "nft",
            "-j",
            "list",
            "counter",
            "inet",
            &self.table,
            "leaked",
        ])?;
        let json: serde_json::Value = serde_json::from_str(&out)?;
        json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|item| item["counter"]["packets"].as_u64())
            .context("no counter in nft's answer")
    }

    /// The nftables table's name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = nft(&format!(
            "table inet {t} {{}}\ndelete table inet {t}\n",
            t = self.table
        ));
    }
}

fn nft(rules: &str) -> Result<()> {
    let mut c = std::process::Command::new("nft");
    c.args(["-f", "-"]);
    cmd::run_with_input(&mut c, Some(rules.as_bytes()))?;
    Ok(())
}

/// Removes guard tables whose owner process is gone.
fn remove_stale_tables() {
    let Ok(out) = cmd::host(&["nft", "list", "tables"]) else {
        return;
    };
    for line in out.lines() {
        let Some(name) = line.strip_prefix("table inet ") else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(TABLE_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if crate::controlplane::process_gone(pid) {
            let _ = nft(&format!("delete table inet {name}\n"));
        }
    }
}
