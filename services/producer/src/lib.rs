//! The producer: eventpipe's source. A deterministic simulator of bank customers
//! ([`simulator`], [`customer`]) and the loops that send its events to Kafka
//! ([`publish`]). The binary (`main.rs`) wires them to the config and the stage shell.

pub mod customer;
pub mod publish;
pub mod settings;
pub mod simulator;
