//! SIP loopback test bot (see DESIGN.md). Built on `sip-stack`, `media` and
//! `agent-bridge`.
//!
//! A [`TestBot`] answers or places one call over real SIP and RTP, runs a
//! scenario [`Script`] with its [`brain`] (an
//! [`AgentRuntime`](agent_bridge::agent::AgentRuntime), the same trait as
//! agents) over the bridge agents use ([`agent_bridge::bridge`]), applies a
//! [`NetworkProfile`] to its media through a [`relay`], and reports
//! [`Measurements`]; [`run_in_process`] joins the brain and an agent
//! without SIP. [`Thresholds`] and [`Aggregate`] turn measurements into
//! verdicts and batch summaries.

pub mod bot;
pub mod brain;
mod in_process;
pub mod measure;
pub mod netprofile;
pub mod relay;
pub mod script;
pub mod speech;
pub mod vad;

pub use bot::{run_in_process, BotConfig, BotError, RunReport, RunSpec, TestBot};
pub use measure::{Aggregate, Measurements, Party, Thresholds, Verdict};
pub use netprofile::NetworkProfile;
pub use script::Script;
