#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod acl;
// `bench` and `local` serve the binary, benches/ and examples/ (feature
// `tools`, which `cli` turns on); they are not part of the library's API.
#[cfg(feature = "tools")]
#[doc(hidden)]
pub mod bench;
pub mod client;
pub mod config;
pub mod conn;
pub mod consumer;
mod direct;
pub mod dlq;
pub mod duration;
pub mod envelope;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_api;
pub mod group;
pub mod keys;
#[cfg(feature = "tools")]
#[doc(hidden)]
pub mod local;
pub mod partitioner;
pub mod producer;
pub mod rate_limit;
pub mod reader;
mod resp;
pub mod retry;
pub mod schedule;
pub mod scheduler;
mod scripts;
mod store;
mod tls;
pub mod topic;

pub use client::Client;
pub use config::Config;
pub use consumer::{Context, HandlerError, Worker, WorkerHandle};
pub use envelope::{Event, Headers, Message, StreamId};
pub use error::{Error, PoolFailure, Result};
pub use group::{GroupInfo, MemberInfo, Mode, PartitionInfo};
pub use producer::{Producer, ProducerConfig, PublishOptions, Receipt, Record};
pub use reader::{Reader, StartAt};
pub use schedule::{ScheduleSpec, Timetable};
pub use scheduler::Scheduler;
pub use topic::{Created, TopicInfo, TopicSpec};
