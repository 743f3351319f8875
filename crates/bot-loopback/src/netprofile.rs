//! Network profiles: the impaired paths a test run can ask for.
//!
//! The bot applies a profile to both directions of its own media
//! ([`crate::relay`]): what it sends to the agent and what it receives.
//! `clean` is the loopback path as it is (no simulated delay, loss or
//! jitter), so a clean run measures the service and the agent alone; the
//! others use the [`media::netsim`] presets.

use std::fmt;
use std::str::FromStr;

use media::netsim::NetSimConfig;
use serde::{Deserialize, Serialize};

/// A simulated network path, named as in the API (`network_profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkProfile {
    /// The loopback path unchanged.
    #[default]
    Clean,
    /// About 3% loss, mostly in bursts ([`NetSimConfig::lossy`]).
    Lossy,
    /// About 40 ms of delay variation ([`NetSimConfig::jittery`]).
    Jittery,
    /// Jitter, delay spikes, burst loss, reordering ([`NetSimConfig::bad_mobile`]).
    BadMobile,
}

/// A profile name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network profile {0:?} (expected clean, lossy, jittery or bad_mobile)")]
pub struct UnknownProfile(pub String);

impl NetworkProfile {
    /// Every profile.
    pub const ALL: [NetworkProfile; 4] = [
        NetworkProfile::Clean,
        NetworkProfile::Lossy,
        NetworkProfile::Jittery,
        NetworkProfile::BadMobile,
    ];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkProfile::Clean => "clean",
            NetworkProfile::Lossy => "lossy",
            NetworkProfile::Jittery => "jittery",
            NetworkProfile::BadMobile => "bad_mobile",
        }
    }

    /// The simulated path of each direction; `None` for `clean`.
    pub fn netsim_config(self) -> Option<NetSimConfig> {
        match self {
            NetworkProfile::Clean => None,
            NetworkProfile::Lossy => Some(NetSimConfig::lossy()),
            NetworkProfile::Jittery => Some(NetSimConfig::jittery()),
            NetworkProfile::BadMobile => Some(NetSimConfig::bad_mobile()),
        }
    }
}

impl fmt::Display for NetworkProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetworkProfile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetworkProfile::ALL
            .into_iter()
            .find(|profile| profile.as_str() == s)
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_serialize_as_the_api_strings() {
        for profile in NetworkProfile::ALL {
            assert_eq!(profile.as_str().parse::<NetworkProfile>(), Ok(profile));
            let json = serde_json::to_string(&profile).expect("serializes");
            assert_eq!(json, format!("\"{}\"", profile.as_str()));
            let back: NetworkProfile = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, profile);
        }
        assert!("wifi".parse::<NetworkProfile>().is_err());
        assert!("Clean".parse::<NetworkProfile>().is_err());
    }

    #[test]
    fn only_impaired_profiles_simulate_a_path() {
        assert!(NetworkProfile::Clean.netsim_config().is_none());
        for profile in [
            NetworkProfile::Lossy,
            NetworkProfile::Jittery,
            NetworkProfile::BadMobile,
        ] {
            let config = profile.netsim_config().expect("impaired");
            assert!(config.validate().is_ok());
            assert!(config.loss > 0.0);
        }
    }
}
