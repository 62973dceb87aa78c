//! A fleet of gateways on one configuration kept in etcd: following it (`run --config
//! etcd://…`), changing it (`config push|get|history`) and watching the fleet (`fleet status`).

pub mod config_cmd;
pub mod follow;
pub mod status;
pub mod store;

pub use config_cmd::ConfigCommand;
pub use follow::{FleetMember, FollowOptions, RunArgs};
pub use status::FleetCommand;
pub use store::{StoreArgs, StoreUrl};
