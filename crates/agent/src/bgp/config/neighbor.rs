//! Neighbours and peer groups of a BGPConfiguration for this node: node selectors, MD5
//! passwords from Secrets, families, timers, transport, graceful restart and the global
//! defaults a neighbour inherits.

use super::*;

/// Neighbour settings taken from the global section when a neighbour sets none.
pub(super) struct NeighborDefaults {
    pub(super) graceful_restart: Option<GracefulRestartConfig>,
    pub(super) export: Option<ExportPolicy>,
    pub(super) bind_interface: Option<String>,
}

impl NeighborDefaults {
    pub(super) fn fill(&self, n: &mut NeighborConfig) {
        if n.graceful_restart.is_none() {
            n.graceful_restart.clone_from(&self.graceful_restart);
        }
        if n.export == ExportPolicy::default()
            && let Some(e) = &self.export
        {
            n.export = e.clone();
        }
        if n.bind_interface.is_none() {
            n.bind_interface.clone_from(&self.bind_interface);
        }
    }
}

impl Mapper<'_> {
    pub(super) fn password(
        &self,
        path: &str,
        inline: Option<&String>,
        secret: Option<&crd::SecretKeySelector>,
    ) -> Result<Option<String>, MapError> {
        if let Some(r) = secret {
            return match self.secrets.get(&(r.name.clone(), r.key.clone())) {
                Some(v) => Ok(Some(v.clone())),
                None => Err(MapError::MissingSecret {
                    path: format!("{path}.authPasswordSecretRef"),
                    secret: r.name.clone(),
                    key: r.key.clone(),
                }),
            };
        }
        Ok(inline.filter(|p| !p.is_empty()).cloned())
    }

    pub(super) fn selected(
        &self,
        path: &str,
        selector: Option<&LabelSelector>,
    ) -> Result<bool, MapError> {
        match selector {
            None => Ok(true),
            Some(s) => Ok(Selector::parse(s)
                .map_err(|e| invalid(format!("{path}.nodeSelector"), e.0))?
                .matches(&self.node.labels)),
        }
    }

    /// Peer groups that apply to this node, as neighbour templates (address unset).
    pub(super) fn peer_groups(
        &mut self,
        spec: &BGPConfigurationSpec,
    ) -> Result<BTreeMap<String, NeighborConfig>, MapError> {
        let mut out = BTreeMap::new();
        for (i, g) in spec.peer_groups.iter().flatten().enumerate() {
            let path = format!("spec.peerGroups[{i}]");
            if !self.selected(&path, g.node_selector.as_ref())? {
                continue;
            }
            let c = &g.config;
            let mut n =
                NeighborConfig::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), c.peer_asn.unwrap_or(0));
            n.local_asn = c.local_asn.filter(|a| *a != 0);
            n.description = c.description.clone().unwrap_or_default();
            n.md5_password = self.password(
                &format!("{path}.config"),
                c.auth_password.as_ref(),
                c.auth_password_secret_ref.as_ref(),
            )?;
            self.families(&path, g.afi_safis.as_deref(), &mut n)?;
            if let Some(e) = export_policy(g.apply_policy.as_ref(), &format!("{path}.applyPolicy"))?
            {
                n.export = e;
            }
            self.import_policy(&path, g.apply_policy.as_ref());
            self.timers(&path, g.timers.as_ref(), &mut n);
            self.transport(&path, g.transport.as_ref(), &mut n)?;
            out.insert(c.peer_group_name.clone(), n);
        }
        Ok(out)
    }

    pub(super) fn neighbor(
        &mut self,
        i: usize,
        nb: &crd::Neighbor,
        groups: &BTreeMap<String, NeighborConfig>,
        defaults: &NeighborDefaults,
    ) -> Result<Option<NeighborConfig>, MapError> {
        let path = format!("spec.neighbors[{i}]");
        if !self.selected(&path, nb.node_selector.as_ref())? {
            return Ok(None);
        }
        let c = &nb.config;
        if c.neighbor_interface.as_ref().is_some_and(|s| !s.is_empty())
            && c.neighbor_address.as_ref().is_none_or(|s| s.is_empty())
        {
            self.unsupported
                .push(format!("{path}.config.neighborInterface"));
            return Ok(None);
        }
        let address: IpAddr = c
            .neighbor_address
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|_| {
                invalid(
                    format!("{path}.config.neighborAddress"),
                    "not an IP address",
                )
            })?;
        let mut n = match c.peer_group.as_ref().filter(|g| !g.is_empty()) {
            Some(g) => match groups.get(g) {
                Some(template) => template.clone(),
                None => {
                    self.warnings.push((
                        event::PEER_GROUP_MISSING,
                        format!(
                            "neighbor {address} refers to peer group {g:?}, which is not configured on node {}",
                            self.node.name
                        ),
                    ));
                    return Ok(None);
                }
            },
            None => NeighborConfig::new(address, c.peer_asn),
        };
        n.address = address;
        if c.peer_asn != 0 {
            n.peer_asn = c.peer_asn;
        }
        if n.peer_asn == 0 {
            return Err(invalid(
                format!("{path}.config.peerAsn"),
                "0 is not an AS number",
            ));
        }
        if let Some(a) = c.local_asn.filter(|a| *a != 0) {
            n.local_asn = Some(a);
        }
        if let Some(d) = &c.description {
            n.description.clone_from(d);
        }
        n.admin_down = c.admin_down.unwrap_or(false);
        if c.vrf.as_ref().is_some_and(|v| !v.is_empty()) {
            self.unsupported.push(format!("{path}.config.vrf"));
        }
        if let Some(p) = self.password(
            &format!("{path}.config"),
            c.auth_password.as_ref(),
            c.auth_password_secret_ref.as_ref(),
        )? {
            n.md5_password = Some(p);
        }
        if nb.afi_safis.is_some() {
            self.families(&path, nb.afi_safis.as_deref(), &mut n)?;
        }
        if let Some(e) = export_policy(nb.apply_policy.as_ref(), &format!("{path}.applyPolicy"))? {
            n.export = e;
        }
        self.import_policy(&path, nb.apply_policy.as_ref());
        self.timers(&path, nb.timers.as_ref(), &mut n);
        self.transport(&path, nb.transport.as_ref(), &mut n)?;
        if let Some(gr) = &nb.graceful_restart {
            n.graceful_restart = graceful_restart(gr);
        }
        if nb.route_reflector.is_some() {
            self.unsupported.push(format!("{path}.routeReflector"));
        }
        if let Some(mh) = nb.ebgp_multihop.as_ref().filter(|m| m.enabled) {
            let ttl = mh.multihop_ttl.unwrap_or(255).clamp(1, 255);
            n.ttl = Some(u8::try_from(ttl).unwrap_or(u8::MAX));
        }
        defaults.fill(&mut n);
        Ok(Some(n))
    }

    pub(super) fn families(
        &mut self,
        path: &str,
        afi_safis: Option<&[crd::AfiSafi]>,
        n: &mut NeighborConfig,
    ) -> Result<(), MapError> {
        let Some(list) = afi_safis else {
            return Ok(());
        };
        let mut families = Vec::new();
        for (j, a) in list.iter().enumerate() {
            let p = format!("{path}.afiSafis[{j}]");
            if a.prefix_limit.is_some() {
                self.unsupported.push(format!("{p}.prefixLimit"));
            }
            if a.add_paths.is_some() {
                self.unsupported.push(format!("{p}.addPaths"));
            }
            if !a.enabled {
                continue;
            }
            match a.family.as_str() {
                "ipv4-unicast" => families.push(AfiSafi::IPV4_UNICAST),
                "ipv6-unicast" => families.push(AfiSafi::IPV6_UNICAST),
                _ => self.unsupported.push(format!("{p}.family={}", a.family)),
            }
        }
        if families.is_empty() {
            return Err(invalid(
                format!("{path}.afiSafis"),
                "no supported family is enabled",
            ));
        }
        n.families = families;
        Ok(())
    }

    pub(super) fn import_policy(&mut self, path: &str, apply: Option<&ApplyPolicy>) {
        if apply.is_some_and(|a| a.import_policy.is_some()) {
            self.unsupported
                .push(format!("{path}.applyPolicy.importPolicy"));
        }
    }

    pub(super) fn timers(
        &mut self,
        path: &str,
        timers: Option<&crd::Timers>,
        n: &mut NeighborConfig,
    ) {
        let Some(t) = timers.map(|t| &t.config) else {
            return;
        };
        if let Some(s) = t.connect_retry.filter(|s| *s > 0) {
            n.connect_retry = Duration::from_secs(s);
        }
        if let Some(h) = t.hold_time {
            n.hold_time = u16::try_from(h).unwrap_or(u16::MAX);
        }
        if t.keepalive_interval
            .is_some_and(|k| k != u64::from(n.hold_time / 3))
        {
            self.unsupported.push(format!(
                "{path}.timers.config.keepaliveInterval (always holdTime/3)"
            ));
        }
        if t.minimum_advertisement_interval.is_some_and(|m| m > 0) {
            self.unsupported
                .push(format!("{path}.timers.config.minimumAdvertisementInterval"));
        }
    }

    pub(super) fn transport(
        &mut self,
        path: &str,
        transport: Option<&crd::Transport>,
        n: &mut NeighborConfig,
    ) -> Result<(), MapError> {
        let Some(t) = transport else {
            return Ok(());
        };
        if let Some(a) = t.local_address.as_ref().filter(|a| !a.is_empty()) {
            n.local_address = Some(a.parse().map_err(|_| {
                invalid(
                    format!("{path}.transport.localAddress"),
                    "not an IP address",
                )
            })?);
        }
        if let Some(p) = t.passive_mode {
            n.passive = p;
        }
        if let Some(i) = t.bind_interface.as_ref().filter(|i| !i.is_empty()) {
            n.bind_interface = Some(i.clone());
        }
        Ok(())
    }
}

pub(super) fn graceful_restart(gr: &crd::GracefulRestart) -> Option<GracefulRestartConfig> {
    (gr.enabled == Some(true)).then(|| GracefulRestartConfig {
        restart_time: u16::try_from(gr.restart_time.unwrap_or(120).min(4095)).unwrap_or(4095),
        restarting: false,
        forwarding_preserved: false,
    })
}
