//! The announcer settings an LBNodeAgent's `local` spec resolves to, with PureLB's
//! defaults and clamps: the interface choice, the dummy link's name, GARP / NA and
//! the address lifetimes and flags. Defaulted or clamped values are reported as
//! warnings; a spec the announcer cannot use is an [`InvalidSettings`] error.

use std::time::Duration;

use purelb_api::crd::lb_node_agent::{
    DEFAULT_DUMMY_INTERFACE, DEFAULT_LOCAL_INTERFACE, GARPConfig, InterfaceAddressConfig,
    LBNodeAgentLocalSpec,
};
use regex::Regex;

use crate::parse::go_duration::{format_go_duration, parse_go_duration};

/// How the local announcement interface is found (`spec.local.localInterface`).
#[derive(Debug, Clone)]
pub enum InterfaceChoice {
    /// `default` or empty: the default-route link of the address's family.
    DefaultRoute,
    /// An unanchored regular expression matched against link names.
    Regex(Regex),
}

impl PartialEq for InterfaceChoice {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::DefaultRoute, Self::DefaultRoute) => true,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for InterfaceChoice {}

/// Gratuitous ARP / unsolicited NA after a local address is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GarpSettings {
    pub initial_delay: Duration,
    /// Packets per announcement, 1..=10.
    pub count: u32,
    pub interval: Duration,
    pub verify_before_send: bool,
}

impl Default for GarpSettings {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            count: 3,
            interval: Duration::from_millis(500),
            verify_before_send: true,
        }
    }
}

/// Lifetimes (seconds, 0 = permanent) and the no-prefix-route flag of added addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressSettings {
    pub valid_lifetime: u32,
    pub preferred_lifetime: u32,
    pub no_prefix_route: bool,
}

impl AddressSettings {
    /// Real-interface addresses: five minutes, no prefix route (so CNIs such as
    /// Flannel do not take the VIP for a node address).
    pub const LOCAL_DEFAULT: Self = Self {
        valid_lifetime: 300,
        preferred_lifetime: 300,
        no_prefix_route: true,
    };
    /// Dummy-interface addresses: permanent, with the prefix route BGP advertises.
    pub const DUMMY_DEFAULT: Self = Self {
        valid_lifetime: 0,
        preferred_lifetime: 0,
        no_prefix_route: false,
    };
    /// The shortest non-zero valid lifetime accepted.
    pub const MIN_LIFETIME: u32 = 60;

    pub fn is_permanent(&self) -> bool {
        self.valid_lifetime == 0
    }

    /// How often a finite-lifetime address is re-added: `max(valid/2, 30 s)`;
    /// `None` for a permanent address.
    pub fn renewal_interval(&self) -> Option<Duration> {
        (!self.is_permanent()).then(|| {
            Duration::from_secs(u64::from(self.valid_lifetime / 2)).max(Duration::from_secs(30))
        })
    }
}

/// An LBNodeAgent `local` spec with defaults applied and values clamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    pub local_interface: InterfaceChoice,
    /// `interfaces` in listed order, without empty names, the dummy name and repeats.
    pub extra_interfaces: Vec<String>,
    pub dummy_interface: String,
    /// `None` when `garpConfig` is absent or `enabled: false`.
    pub garp: Option<GarpSettings>,
    pub local_address: AddressSettings,
    pub dummy_address: AddressSettings,
}

impl Default for AgentSettings {
    /// The shipped default LBNodeAgent: default-route interface, `kube-lb0`, no GARP.
    fn default() -> Self {
        Self {
            local_interface: InterfaceChoice::DefaultRoute,
            extra_interfaces: Vec::new(),
            dummy_interface: DEFAULT_DUMMY_INTERFACE.to_owned(),
            garp: None,
            local_address: AddressSettings::LOCAL_DEFAULT,
            dummy_address: AddressSettings::DUMMY_DEFAULT,
        }
    }
}

/// A `local` spec the announcer cannot use (bad regex, bad dummy name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSettings(pub String);

/// Settings plus what was defaulted or clamped on the way (one line each, for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSettings {
    pub settings: AgentSettings,
    pub warnings: Vec<String>,
}

impl AgentSettings {
    /// Resolves a `local` spec.
    ///
    /// Choice: an empty `dummyInterface` means `kube-lb0` (the CRD default), as an
    /// empty `localInterface` means `default`; a name Linux would refuse is an error
    /// here rather than at link creation.
    pub fn resolve(spec: &LBNodeAgentLocalSpec) -> Result<ResolvedSettings, InvalidSettings> {
        let mut warnings = Vec::new();
        let local_interface = match spec.local_interface.as_str() {
            "" | DEFAULT_LOCAL_INTERFACE => InterfaceChoice::DefaultRoute,
            pattern => InterfaceChoice::Regex(Regex::new(pattern).map_err(|e| {
                InvalidSettings(format!(
                    "error compiling localInterface regex {pattern:?}: {}",
                    regex_error_text(&e)
                ))
            })?),
        };
        let dummy_interface = if spec.dummy_interface.is_empty() {
            DEFAULT_DUMMY_INTERFACE.to_owned()
        } else {
            spec.dummy_interface.clone()
        };
        validate_link_name(&dummy_interface)?;
        let mut extra_interfaces: Vec<String> = Vec::new();
        for name in spec.interfaces.iter().flatten() {
            if name.is_empty() || *name == dummy_interface || extra_interfaces.contains(name) {
                continue;
            }
            extra_interfaces.push(name.clone());
        }
        let garp = spec
            .garp_config
            .as_ref()
            .and_then(|g| resolve_garp(g, &mut warnings));
        let addresses = spec.address_config.as_ref();
        let local_address = resolve_address(
            addresses.and_then(|a| a.local_interface.as_ref()),
            AddressSettings::LOCAL_DEFAULT,
            "addressConfig.localInterface",
            &mut warnings,
        );
        let dummy_address = resolve_address(
            addresses.and_then(|a| a.dummy_interface.as_ref()),
            AddressSettings::DUMMY_DEFAULT,
            "addressConfig.dummyInterface",
            &mut warnings,
        );
        Ok(ResolvedSettings {
            settings: Self {
                local_interface,
                extra_interfaces,
                dummy_interface,
                garp,
                local_address,
                dummy_address,
            },
            warnings,
        })
    }
}

/// The regex crate's message without its multi-line caret diagram.
fn regex_error_text(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map_or_else(|| text.trim().to_owned(), str::to_owned)
}

/// Linux `dev_valid_name`: 1..=15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
fn validate_link_name(name: &str) -> Result<(), InvalidSettings> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(InvalidSettings(format!(
            "invalid dummyInterface {name:?}: not a valid Linux interface name"
        )));
    }
    Ok(())
}

fn resolve_garp(config: &GARPConfig, warnings: &mut Vec<String>) -> Option<GarpSettings> {
    if config.enabled == Some(false) {
        return None;
    }
    let defaults = GarpSettings::default();
    let count = match config.count {
        None => defaults.count,
        Some(c) if c < 1 => {
            warnings.push(format!("garpConfig.count {c} is below 1; using 1"));
            1
        }
        Some(c) if c > 10 => {
            warnings.push(format!("garpConfig.count {c} is above 10; using 10"));
            10
        }
        Some(c) => u32::try_from(c).unwrap_or(defaults.count),
    };
    Some(GarpSettings {
        initial_delay: duration_or_default(
            config.initial_delay.as_deref(),
            defaults.initial_delay,
            "garpConfig.initialDelay",
            warnings,
        ),
        count,
        interval: duration_or_default(
            config.interval.as_deref(),
            defaults.interval,
            "garpConfig.interval",
            warnings,
        ),
        verify_before_send: config
            .verify_before_send
            .unwrap_or(defaults.verify_before_send),
    })
}

fn duration_or_default(
    value: Option<&str>,
    default: Duration,
    field: &str,
    warnings: &mut Vec<String>,
) -> Duration {
    match value {
        None | Some("") => default,
        Some(text) => parse_go_duration(text).unwrap_or_else(|e| {
            warnings.push(format!(
                "{field}: {e}; using {}",
                format_go_duration(default)
            ));
            default
        }),
    }
}

fn resolve_address(
    config: Option<&InterfaceAddressConfig>,
    default: AddressSettings,
    path: &str,
    warnings: &mut Vec<String>,
) -> AddressSettings {
    let Some(config) = config else {
        return default;
    };
    let mut settings = default;
    if let Some(valid) = config.valid_lifetime
        && let Some(mut valid) = lifetime(valid, path, "validLifetime", warnings)
    {
        if valid > 0 && valid < AddressSettings::MIN_LIFETIME {
            warnings.push(format!(
                "{path}.validLifetime {valid} is below the {} s minimum; using {}",
                AddressSettings::MIN_LIFETIME,
                AddressSettings::MIN_LIFETIME
            ));
            valid = AddressSettings::MIN_LIFETIME;
        }
        settings.valid_lifetime = valid;
        settings.preferred_lifetime = valid;
    }
    if let Some(preferred) = config.preferred_lifetime
        && let Some(preferred) = lifetime(preferred, path, "preferredLifetime", warnings)
    {
        if preferred > settings.valid_lifetime {
            warnings.push(format!(
                "{path}.preferredLifetime {preferred} is longer than validLifetime {}; using {}",
                settings.valid_lifetime, settings.valid_lifetime
            ));
        }
        settings.preferred_lifetime = preferred;
    }
    settings.preferred_lifetime = settings.preferred_lifetime.min(settings.valid_lifetime);
    if let Some(no_prefix_route) = config.no_prefix_route {
        settings.no_prefix_route = no_prefix_route;
    }
    settings
}

/// A configured lifetime as the kernel's `u32`; negative values are ignored (the CRD
/// forbids them) and huge ones mean "infinite" (`u32::MAX`).
fn lifetime(value: i64, path: &str, field: &str, warnings: &mut Vec<String>) -> Option<u32> {
    if value < 0 {
        warnings.push(format!(
            "{path}.{field} {value} is negative; using the default"
        ));
        return None;
    }
    Some(u32::try_from(value).unwrap_or_else(|_| {
        warnings.push(format!(
            "{path}.{field} {value} is too long; using {}",
            u32::MAX
        ));
        u32::MAX
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use purelb_api::crd::lb_node_agent::AddressConfig;

    #[test]
    fn interface_choice_and_dummy_name() {
        for (pattern, default) in [("default", true), ("", true), ("eth", false)] {
            let r = AgentSettings::resolve(&LBNodeAgentLocalSpec {
                local_interface: pattern.into(),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(
                r.settings.local_interface == InterfaceChoice::DefaultRoute,
                default
            );
        }
        let r = AgentSettings::resolve(&LBNodeAgentLocalSpec {
            dummy_interface: String::new(),
            interfaces: Some(vec![
                "eth1".into(),
                String::new(),
                "kube-lb0".into(),
                "eth2".into(),
                "eth1".into(),
            ]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.settings.dummy_interface, "kube-lb0");
        assert_eq!(r.settings.extra_interfaces, vec!["eth1", "eth2"]);
        for bad in ["a/b", "a b", "a:b", "0123456789abcdef", ".", ".."] {
            assert!(
                AgentSettings::resolve(&LBNodeAgentLocalSpec {
                    dummy_interface: bad.into(),
                    ..Default::default()
                })
                .is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            AgentSettings::resolve(&LBNodeAgentLocalSpec::default())
                .unwrap()
                .settings,
            AgentSettings::default()
        );
    }

    #[test]
    fn garp_defaults_clamps_and_durations() {
        let resolve = |g: GARPConfig| {
            AgentSettings::resolve(&LBNodeAgentLocalSpec {
                garp_config: Some(g),
                ..Default::default()
            })
            .unwrap()
        };
        let r = resolve(GARPConfig::default());
        assert_eq!(r.settings.garp, Some(GarpSettings::default()));
        assert!(r.warnings.is_empty());
        assert_eq!(
            GarpSettings::default(),
            GarpSettings {
                initial_delay: Duration::from_millis(100),
                count: 3,
                interval: Duration::from_millis(500),
                verify_before_send: true
            }
        );

        let r = resolve(GARPConfig {
            enabled: Some(false),
            ..Default::default()
        });
        assert_eq!(r.settings.garp, None);
        assert_eq!(
            AgentSettings::resolve(&LBNodeAgentLocalSpec::default())
                .unwrap()
                .settings
                .garp,
            None
        );

        let r = resolve(GARPConfig {
            enabled: Some(true),
            initial_delay: Some("1m30s".into()),
            count: Some(0),
            interval: Some("1.5s".into()),
            verify_before_send: Some(false),
        });
        let g = r.settings.garp.unwrap();
        assert_eq!(g.initial_delay, Duration::from_secs(90));
        assert_eq!(g.count, 1);
        assert_eq!(g.interval, Duration::from_millis(1500));
        assert!(!g.verify_before_send);
        assert_eq!(r.warnings, vec!["garpConfig.count 0 is below 1; using 1"]);

        let r = resolve(GARPConfig {
            count: Some(11),
            initial_delay: Some("soon".into()),
            interval: Some("5".into()),
            ..Default::default()
        });
        let g = r.settings.garp.unwrap();
        assert_eq!(g.count, 10);
        assert_eq!(g.initial_delay, Duration::from_millis(100));
        assert_eq!(g.interval, Duration::from_millis(500));
        assert_eq!(r.warnings.len(), 3);
        assert!(r.warnings[0].contains("above 10"));
        assert!(r.warnings[1].starts_with("garpConfig.initialDelay: "));
        assert!(r.warnings[1].ends_with("using 100ms"));
        assert!(r.warnings[2].starts_with("garpConfig.interval: "));
        assert!(r.warnings[2].ends_with("using 500ms"));

        let r = resolve(GARPConfig {
            initial_delay: Some(String::new()),
            count: Some(10),
            ..Default::default()
        });
        assert_eq!(r.settings.garp.unwrap().count, 10);
        assert!(r.warnings.is_empty());
    }

    fn addresses(
        local: Option<InterfaceAddressConfig>,
        dummy: Option<InterfaceAddressConfig>,
    ) -> ResolvedSettings {
        AgentSettings::resolve(&LBNodeAgentLocalSpec {
            address_config: Some(AddressConfig {
                local_interface: local,
                dummy_interface: dummy,
            }),
            ..Default::default()
        })
        .unwrap()
    }

    fn lifetimes(valid: Option<i64>, preferred: Option<i64>) -> InterfaceAddressConfig {
        InterfaceAddressConfig {
            valid_lifetime: valid,
            preferred_lifetime: preferred,
            no_prefix_route: None,
        }
    }

    #[test]
    fn address_defaults() {
        let s = addresses(None, None).settings;
        assert_eq!(
            s.local_address,
            AddressSettings {
                valid_lifetime: 300,
                preferred_lifetime: 300,
                no_prefix_route: true
            }
        );
        assert_eq!(
            s.dummy_address,
            AddressSettings {
                valid_lifetime: 0,
                preferred_lifetime: 0,
                no_prefix_route: false
            }
        );
        assert_eq!(
            AddressSettings::LOCAL_DEFAULT.renewal_interval(),
            Some(Duration::from_secs(150))
        );
        assert_eq!(AddressSettings::DUMMY_DEFAULT.renewal_interval(), None);
    }

    #[test]
    fn address_clamps() {
        // Non-zero below 60 is raised to 60; preferred follows valid.
        let r = addresses(Some(lifetimes(Some(10), None)), None);
        assert_eq!(r.settings.local_address.valid_lifetime, 60);
        assert_eq!(r.settings.local_address.preferred_lifetime, 60);
        assert_eq!(
            r.settings.local_address.renewal_interval(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(r.warnings.len(), 1);
        // Zero stays zero (permanent).
        let r = addresses(Some(lifetimes(Some(0), Some(100))), None);
        assert_eq!(r.settings.local_address.valid_lifetime, 0);
        assert_eq!(r.settings.local_address.preferred_lifetime, 0);
        // Preferred is clamped to valid.
        let r = addresses(Some(lifetimes(Some(120), Some(600))), None);
        assert_eq!(r.settings.local_address.valid_lifetime, 120);
        assert_eq!(r.settings.local_address.preferred_lifetime, 120);
        assert_eq!(r.warnings.len(), 1);
        let r = addresses(Some(lifetimes(Some(600), Some(120))), None);
        assert_eq!(r.settings.local_address.preferred_lifetime, 120);
        assert!(r.warnings.is_empty());
        // Only preferred: valid keeps its default.
        let r = addresses(Some(lifetimes(None, Some(100))), None);
        assert_eq!(r.settings.local_address.valid_lifetime, 300);
        assert_eq!(r.settings.local_address.preferred_lifetime, 100);
        // Dummy: preferred alone is clamped to the permanent valid 0.
        let r = addresses(None, Some(lifetimes(None, Some(100))));
        assert_eq!(r.settings.dummy_address, AddressSettings::DUMMY_DEFAULT);
        // Dummy with a finite lifetime and the flag flipped.
        let r = addresses(
            None,
            Some(InterfaceAddressConfig {
                valid_lifetime: Some(30),
                preferred_lifetime: None,
                no_prefix_route: Some(true),
            }),
        );
        assert_eq!(
            r.settings.dummy_address,
            AddressSettings {
                valid_lifetime: 60,
                preferred_lifetime: 60,
                no_prefix_route: true
            }
        );
        // Negative is ignored, huge is infinite.
        let r = addresses(Some(lifetimes(Some(-5), None)), None);
        assert_eq!(r.settings.local_address, AddressSettings::LOCAL_DEFAULT);
        assert_eq!(r.warnings.len(), 1);
        let r = addresses(Some(lifetimes(Some(1 << 40), None)), None);
        assert_eq!(r.settings.local_address.valid_lifetime, u32::MAX);
    }
}
