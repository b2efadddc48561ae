//! This node: which LBNodeAgent applies and what it means, the node's links and
//! addresses, and the per-address election among the nodes.

pub mod election;
pub mod links;
pub mod netstate;
pub mod selection;
pub mod settings;
