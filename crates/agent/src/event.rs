//! Kubernetes Events the agent emits (spec §8), as values: the controller posts them
//! with component `purelb-lbnodeagent`.

use std::fmt;

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

/// The Kubernetes event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event to post; the object it is about is implied by where it is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub reason: &'static str,
    pub type_: EventType,
    pub message: String,
}

impl Event {
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            type_: EventType::Normal,
            message: message.into(),
        }
    }

    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            type_: EventType::Warning,
            message: message.into(),
        }
    }
}
