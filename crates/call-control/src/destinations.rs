//! Where the service may connect on a tenant's behalf.
//!
//! Webhook URLs, agent WebSocket URLs and trunk hosts are written by API clients, so an
//! outbound connection to them must never reach what only the server can reach: its own
//! loopback services, the cloud metadata endpoint (169.254.169.254, `fd00:ec2::254`,
//! 100.100.100.200), or the private network behind it. [`DestinationPolicy`] refuses every
//! address [`classify`] puts in a non-public class, unless `[security]
//! allow_private_destinations = true` (single-tenant and test setups).
//!
//! The check is made on the resolved address, at connect time, by the code that connects
//! ([`DestinationPolicy::resolve`] returns only the addresses that may be used, and the caller
//! connects to one of those), so a name that resolves to a public address when the API
//! checks it and to 127.0.0.1 when the call is placed is still refused. The API refuses a
//! literal forbidden IP up front ([`DestinationPolicy::check_literal`]) so the client hears
//! of it at once.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::Config;

/// The setting that allows non-public destinations, as written in the config file.
pub const SETTING: &str = "[security] allow_private_destinations = true";
/// The environment variable of [`SETTING`].
pub const SETTING_ENV: &str = "DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS";

/// Why an address is not a public destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressClass {
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 0.0.0.0/8 ("this network", reaches the host itself), `::`.
    Unspecified,
    /// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, deprecated site-local `fec0::/10`.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (also where some clouds put their metadata service).
    SharedAddressSpace,
    /// 169.254.0.0/16 (the cloud metadata address among them), `fe80::/10`.
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// 224.0.0.0/4, `ff00::/8`.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4, 192.0.0.0/24 (IETF protocol assignments), 198.18.0.0/15 (benchmarking).
    Reserved,
}

impl AddressClass {
    /// The class in words (`"loopback"`, `"link-local"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Private => "private",
            AddressClass::SharedAddressSpace => "shared (carrier-grade NAT)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a non-public address, or `None` for a public one. IPv6 forms that carry an
/// IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`,
/// 6to4 `2002::/16`) are judged by that IPv4 address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Errors of a destination check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// The destination is (or resolves to) a non-public address.
    #[error("{}", refused_message(host, *ip, *class))]
    Refused {
        /// The host as written (a name or an IP).
        host: String,
        /// The address refused.
        ip: IpAddr,
        /// Why it is not public.
        class: AddressClass,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why.
        reason: String,
    },
}

fn refused_message(host: &str, ip: IpAddr, class: AddressClass) -> String {
    let named = if literal_ip(host) == Some(ip) {
        format!("destination {ip}")
    } else {
        format!("destination {host} resolves to {ip}, which")
    };
    format!(
        "{named} is a {class} address: refused (set {SETTING}, or {SETTING_ENV}=true, \
         to allow private destinations)"
    )
}

/// Which destinations outbound connections may reach. `Default` refuses every non-public
/// address, like the configuration's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    allow_private: bool,
}

impl DestinationPolicy {
    /// A policy that refuses non-public addresses unless `allow_private`.
    pub const fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// The policy of `[security] allow_private_destinations`.
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.security.allow_private_destinations)
    }

    /// Whether non-public addresses are allowed.
    pub fn allows_private(self) -> bool {
        self.allow_private
    }

    /// Whether `ip` (which `host` names or resolved to) may be connected to.
    pub fn check(self, host: &str, ip: IpAddr) -> Result<(), DestinationError> {
        if self.allow_private {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(class) => Err(DestinationError::Refused {
                host: host.to_owned(),
                ip,
                class,
            }),
        }
    }

    /// Checks `host` when it is a literal IP (`[::1]` as in a URL too); a name passes (it is
    /// checked when resolved, at connect time).
    pub fn check_literal(self, host: &str) -> Result<(), DestinationError> {
        match literal_ip(host) {
            Some(ip) => self.check(host, ip),
            None => Ok(()),
        }
    }

    /// Checks the host of `url` when it is a literal IP, after the URL parser's
    /// normalisation (`http://2130706433/` is 127.0.0.1); a URL that does not parse passes
    /// (its validation reports it).
    pub fn check_url(self, url: &str) -> Result<(), DestinationError> {
        match reqwest::Url::parse(url) {
            Ok(parsed) => parsed
                .host_str()
                .map_or(Ok(()), |host| self.check_literal(host)),
            Err(_) => Ok(()),
        }
    }

    /// Resolves `host` (a name or a literal IP) and returns the addresses that may be
    /// connected to, in the resolver's order, with `port`. Fails when it does not resolve or
    /// when every address is refused (the error names the first refused one).
    pub async fn resolve(self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DestinationError> {
        let resolved: Vec<SocketAddr> = match literal_ip(host) {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|error| DestinationError::Resolve {
                    host: host.to_owned(),
                    reason: error.to_string(),
                })?
                .collect(),
        };
        self.filter(host, resolved)
    }

    /// The addresses of `resolved` (what `host` resolved to) that may be connected to.
    pub fn filter(
        self,
        host: &str,
        resolved: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, DestinationError> {
        if resolved.is_empty() {
            return Err(DestinationError::Resolve {
                host: host.to_owned(),
                reason: "no addresses".into(),
            });
        }
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|addr| match self.check(host, addr.ip()) {
                Ok(()) => true,
                Err(error) => {
                    first_refusal.get_or_insert(error);
                    false
                }
            })
            .collect();
        match first_refusal {
            Some(error) if allowed.is_empty() => Err(error),
            _ => Ok(allowed),
        }
    }
}

/// `host` as an IP address, with or without the brackets of a URL.
fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    let class = if ip.is_loopback() {
        AddressClass::Loopback
    } else if a == 0 {
        AddressClass::Unspecified
    } else if ip.is_private() {
        AddressClass::Private
    } else if a == 100 && (b & 0xc0) == 64 {
        AddressClass::SharedAddressSpace
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) {
        AddressClass::Reserved
    } else {
        return None;
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    if ip.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    let segments = ip.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible): the IPv4 stack answers them.
    if segments[..5] == [0; 5] && (segments[5] == 0xffff || segments[5] == 0) {
        return classify_v4(embedded(segments[6], segments[7]));
    }
    // NAT64 well-known prefix: the translator reaches the embedded IPv4 address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(segments[6], segments[7]));
    }
    // 6to4: the relay reaches the embedded IPv4 address.
    if segments[0] == 0x2002 {
        return classify_v4(embedded(segments[1], segments[2]));
    }
    let first = segments[0];
    if (first & 0xfe00) == 0xfc00 {
        Some(AddressClass::UniqueLocal)
    } else if (first & 0xffc0) == 0xfe80 {
        Some(AddressClass::LinkLocal)
    } else if (first & 0xffc0) == 0xfec0 {
        Some(AddressClass::Private)
    } else if (first & 0xff00) == 0xff00 {
        Some(AddressClass::Multicast)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<AddressClass> {
        classify(ip.parse().expect("an IP literal"))
    }

    #[test]
    fn ipv4_classes() {
        use AddressClass::*;
        let cases = [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.100.100.200", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.0.1", Some(LinkLocal)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.0.170", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("198.19.255.255", Some(Reserved)),
            // Public neighbours of each range.
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("9.255.255.255", None),
            ("11.0.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.167.255.255", None),
            ("192.169.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("169.253.255.255", None),
            ("169.255.0.0", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("203.0.113.7", None),
            ("223.255.255.255", None),
        ];
        for (ip, expected) in cases {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn ipv6_classes() {
        use AddressClass::*;
        let cases = [
            ("::1", Some(Loopback)),
            ("::", Some(Unspecified)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(UniqueLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("ff02::1", Some(Multicast)),
            ("2001:4860:4860::8888", None),
            ("2606:4700::1111", None),
            ("fbff::1", None),
        ];
        for (ip, expected) in cases {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_by_the_ipv4_address() {
        use AddressClass::*;
        let cases = [
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::127.0.0.1", Some(Loopback)),
            ("::192.168.0.1", Some(Private)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:c0a8:101::1", Some(Private)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
        ];
        for (ip, expected) in cases {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn the_default_policy_refuses_and_the_setting_allows() {
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        let public: IpAddr = "8.8.8.8".parse().expect("ip");
        let refused = DestinationPolicy::default()
            .check("127.0.0.1", loopback)
            .expect_err("loopback refused by default");
        assert_eq!(
            refused,
            DestinationError::Refused {
                host: "127.0.0.1".into(),
                ip: loopback,
                class: AddressClass::Loopback,
            }
        );
        let message = refused.to_string();
        assert!(
            message.contains("127.0.0.1 is a loopback address"),
            "{message}"
        );
        assert!(message.contains(SETTING), "{message}");
        assert!(message.contains(SETTING_ENV), "{message}");
        assert!(DestinationPolicy::default()
            .check("dns.google", public)
            .is_ok());
        assert!(DestinationPolicy::new(true)
            .check("localhost", loopback)
            .is_ok());
        assert!(!DestinationPolicy::default().allows_private());
    }

    #[test]
    fn a_name_that_resolves_to_a_refused_address_is_named_with_it() {
        let policy = DestinationPolicy::default();
        let message = policy
            .filter(
                "hooks.example",
                vec!["169.254.169.254:80".parse().expect("addr")],
            )
            .expect_err("refused")
            .to_string();
        assert!(
            message.starts_with("destination hooks.example resolves to 169.254.169.254, which is a link-local address"),
            "{message}"
        );
    }

    #[test]
    fn only_allowed_addresses_are_kept() {
        let policy = DestinationPolicy::default();
        let mixed: Vec<SocketAddr> = vec![
            "127.0.0.1:443".parse().expect("addr"),
            "93.184.215.14:443".parse().expect("addr"),
            "[::1]:443".parse().expect("addr"),
        ];
        assert_eq!(
            policy.filter("mixed.example", mixed.clone()),
            Ok(vec![mixed[1]])
        );
        assert_eq!(
            DestinationPolicy::new(true).filter("mixed.example", mixed.clone()),
            Ok(mixed)
        );
        assert!(matches!(
            policy.filter("empty.example", Vec::new()),
            Err(DestinationError::Resolve { .. })
        ));
    }

    #[test]
    fn literals_are_checked_and_names_left_for_connect_time() {
        let policy = DestinationPolicy::default();
        assert!(policy.check_literal("127.0.0.1").is_err());
        assert!(policy.check_literal("[::1]").is_err());
        assert!(policy.check_literal("::ffff:169.254.169.254").is_err());
        assert!(
            policy.check_literal("localhost").is_ok(),
            "a name: checked when resolved"
        );
        assert!(policy.check_literal("sip.example.com").is_ok());
        assert!(policy.check_literal("203.0.113.7").is_ok());
        assert!(
            policy.check_url("http://2130706433/hook").is_err(),
            "normalised"
        );
        assert!(policy.check_url("wss://[::1]:8443/agent").is_err());
        assert!(policy.check_url("https://hooks.example/x").is_ok());
        assert!(DestinationPolicy::new(true)
            .check_url("http://127.0.0.1/")
            .is_ok());
    }

    #[tokio::test]
    async fn resolving_checks_what_a_name_resolves_to() {
        let policy = DestinationPolicy::default();
        let error = policy
            .resolve("localhost", 5060)
            .await
            .expect_err("refused");
        assert!(
            matches!(error, DestinationError::Refused { ref host, class: AddressClass::Loopback, .. } if host == "localhost"),
            "{error}"
        );
        let error = policy.resolve("[::1]", 5060).await.expect_err("refused");
        assert!(matches!(error, DestinationError::Refused { .. }), "{error}");
        let allowed = DestinationPolicy::new(true)
            .resolve("127.0.0.1", 5060)
            .await
            .expect("allowed");
        assert_eq!(allowed, vec!["127.0.0.1:5060".parse().expect("addr")]);
    }
}
