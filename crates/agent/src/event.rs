//! Kubernetes Events the agent emits, as values: the controller and the BGP runtime post them
//! with component [`COMPONENT`] through `purelb_kube_edge::events::EventSink`.

/// Event reasons on Services.
pub const LOCAL_OVERRIDE: &str = "LocalOverride";
pub const ANNOUNCING_LOCAL: &str = "AnnouncingLocal";
pub const ANNOUNCING_NON_LOCAL: &str = "AnnouncingNonLocal";
pub const ANNOUNCEMENT_FAILED: &str = "AnnouncementFailed";
pub const ANNOUNCE_SLOT_STEAL: &str = "AnnounceSlotSteal";
/// Event reasons on LBNodeAgents.
pub const INVALID_NODE_SELECTOR: &str = "InvalidNodeSelector";
pub const CONFIG_IGNORED: &str = "ConfigIgnored";
pub const CONFIG_ERROR: &str = "ConfigError";
/// Event reasons on BGPConfigurations.
pub const CONFIGURATION_INVALID: &str = "ConfigurationInvalid";
pub const ROUTER_ID_RESOLVED: &str = "RouterIDResolved";
pub const NO_MATCHING_NEIGHBORS: &str = "NoMatchingNeighbors";
pub const PEER_GROUP_MISSING: &str = "PeerGroupMissing";

/// The component the agent's events are recorded as (`source.component`, `reportingComponent`).
pub const COMPONENT: &str = "purelb-lbnodeagent";

/// The event values are the shared recorder's: the agent's plan produces exactly what it posts.
pub use purelb_kube_edge::events::{Event, EventType};
