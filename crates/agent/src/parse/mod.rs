//! Parsers for the text formats the agent's custom resources borrow from Go and
//! Kubernetes.

pub mod go_duration;
pub mod label_selector;
