//! The address guard: which IP addresses a push may be sent to.
//!
//! Webhook URLs come from bot owners, so without a guard a bot owner could
//! make the platform call its own internal services (server-side request
//! forgery). The guard refuses every address that is not a public unicast
//! address: loopback, private, link-local, multicast, documentation and the
//! other special-purpose ranges of the IANA registries, also when they hide
//! inside an IPv6 address (IPv4-mapped, NAT64, 6to4).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Decides whether an IP address may be contacted.
///
/// [`AddressGuard::new`] (also the [`Default`]) refuses every special-purpose
/// address; [`AddressGuard::allow_private_networks`] allows every address, for
/// tests against local servers and on-premise hosts whose webhooks are
/// internal.
///
/// ```
/// use std::net::IpAddr;
/// use eventhook::adapters::AddressGuard;
///
/// let guard = AddressGuard::new();
/// let loopback: IpAddr = "127.0.0.1".parse().unwrap();
/// let refusal = guard.check(loopback).unwrap_err();
/// assert_eq!(refusal.to_string(), "127.0.0.1 is a loopback address");
/// assert!(guard.check("93.184.215.14".parse().unwrap()).is_ok());
///
/// assert!(AddressGuard::allow_private_networks().check(loopback).is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AddressGuard {
    allow_private_networks: bool,
}

impl AddressGuard {
    /// The strict guard: only public unicast addresses are allowed.
    ///
    /// ```
    /// use eventhook::adapters::AddressGuard;
    ///
    /// assert!(!AddressGuard::new().allows_private_networks());
    /// assert!(AddressGuard::new().check("10.0.0.1".parse().unwrap()).is_err());
    /// ```
    pub const fn new() -> AddressGuard {
        AddressGuard { allow_private_networks: false }
    }

    /// A guard that allows every address, private networks included.
    ///
    /// Only for tests and for hosts whose webhooks legitimately live on an
    /// internal network.
    ///
    /// ```
    /// use eventhook::adapters::AddressGuard;
    ///
    /// let guard = AddressGuard::allow_private_networks();
    /// assert!(guard.allows_private_networks());
    /// assert!(guard.check("192.168.1.20".parse().unwrap()).is_ok());
    /// ```
    pub const fn allow_private_networks() -> AddressGuard {
        AddressGuard { allow_private_networks: true }
    }

    /// Whether this guard allows every address.
    ///
    /// ```
    /// use eventhook::adapters::AddressGuard;
    ///
    /// assert!(!AddressGuard::default().allows_private_networks());
    /// ```
    pub const fn allows_private_networks(&self) -> bool {
        self.allow_private_networks
    }

    /// `Ok` when `address` may be contacted, otherwise why not.
    ///
    /// ```
    /// use eventhook::adapters::{AddressGuard, BlockReason};
    ///
    /// let refusal = AddressGuard::new().check("::ffff:10.1.2.3".parse().unwrap()).unwrap_err();
    /// assert_eq!(refusal.reason(), BlockReason::Private);
    /// assert_eq!(refusal.to_string(), "::ffff:10.1.2.3 is an IPv4-mapped form of 10.1.2.3, a private address");
    /// ```
    pub fn check(&self, address: IpAddr) -> Result<(), BlockedAddress> {
        if self.allow_private_networks {
            return Ok(());
        }
        let refusal = match address {
            IpAddr::V4(ipv4) => ipv4_reason(ipv4).map(|reason| (reason, None)),
            IpAddr::V6(ipv6) => ipv6_reason(ipv6),
        };
        match refusal {
            None => Ok(()),
            Some((reason, embedded)) => Err(BlockedAddress { address, reason, embedded }),
        }
    }
}

/// Why the [`AddressGuard`] refused an address: the special range it is in.
///
/// ```
/// use eventhook::adapters::BlockReason;
///
/// assert_eq!(BlockReason::Loopback.to_string(), "a loopback address");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockReason {
    /// `0.0.0.0` or `::`.
    Unspecified,
    /// `0.0.0.0/8` other than `0.0.0.0`: "this network".
    ThisNetwork,
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12` or `192.168.0.0/16`.
    Private,
    /// `100.64.0.0/10`, the carrier-grade NAT range.
    SharedAddressSpace,
    /// `169.254.0.0/16` or `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32` or `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15` or `2001:2::/48`.
    Benchmarking,
    /// `192.0.0.0/24` or `2001::/23`: IETF protocol assignments.
    ProtocolAssignment,
    /// `240.0.0.0/4`, reserved for future use.
    Reserved,
    /// `192.88.99.0/24`, the deprecated 6to4 relay anycast range.
    Relay6to4,
    /// `fc00::/7`.
    UniqueLocal,
    /// `fec0::/10`, deprecated site-local.
    SiteLocal,
    /// `::/96` other than `::` and `::1`: deprecated IPv4-compatible addresses.
    Ipv4Compatible,
    /// `2001::/32`: Teredo tunnels, whose IPv4 end cannot be checked.
    Teredo,
    /// `64:ff9b:1::/48`: NAT64 for local use.
    LocalNat64,
    /// `100::/64`: discard-only.
    DiscardOnly,
    /// `5f00::/16`: segment routing identifiers.
    SegmentRouting,
}

impl BlockReason {
    fn description(self) -> &'static str {
        match self {
            BlockReason::Unspecified => "the unspecified address",
            BlockReason::ThisNetwork => "a \"this network\" address",
            BlockReason::Loopback => "a loopback address",
            BlockReason::Private => "a private address",
            BlockReason::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            BlockReason::LinkLocal => "a link-local address",
            BlockReason::Multicast => "a multicast address",
            BlockReason::Broadcast => "the broadcast address",
            BlockReason::Documentation => "a documentation address",
            BlockReason::Benchmarking => "a benchmarking address",
            BlockReason::ProtocolAssignment => "an IETF protocol assignment address",
            BlockReason::Reserved => "a reserved address",
            BlockReason::Relay6to4 => "a 6to4 relay anycast address",
            BlockReason::UniqueLocal => "a unique local address",
            BlockReason::SiteLocal => "a site-local address",
            BlockReason::Ipv4Compatible => "a deprecated IPv4-compatible address",
            BlockReason::Teredo => "a Teredo address",
            BlockReason::LocalNat64 => "a local-use NAT64 address",
            BlockReason::DiscardOnly => "a discard-only address",
            BlockReason::SegmentRouting => "a segment routing address",
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.description())
    }
}

/// How an IPv6 address carries the IPv4 address it was judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Embedding {
    /// `::ffff:a.b.c.d`.
    Mapped,
    /// `64:ff9b::a.b.c.d`.
    Nat64,
    /// `2002:AABB:CCDD::/48`.
    SixToFour,
}

/// An address the [`AddressGuard`] refused, and why.
///
/// Its `Display` names the address and the range, e.g.
/// `127.0.0.1 is a loopback address`.
///
/// ```
/// use eventhook::adapters::{AddressGuard, BlockReason};
///
/// let refusal = AddressGuard::new().check("169.254.169.254".parse().unwrap()).unwrap_err();
/// assert_eq!(refusal.address().to_string(), "169.254.169.254");
/// assert_eq!(refusal.reason(), BlockReason::LinkLocal);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockedAddress {
    address: IpAddr,
    reason: BlockReason,
    embedded: Option<(Embedding, Ipv4Addr)>,
}

impl BlockedAddress {
    /// The refused address.
    ///
    /// ```
    /// use eventhook::adapters::AddressGuard;
    ///
    /// let refusal = AddressGuard::new().check("::1".parse().unwrap()).unwrap_err();
    /// assert!(refusal.address().is_loopback());
    /// ```
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The special range it is in (for an IPv6 address embedding an IPv4
    /// one, the range of the IPv4 address).
    ///
    /// ```
    /// use eventhook::adapters::{AddressGuard, BlockReason};
    ///
    /// let refusal = AddressGuard::new().check("64:ff9b::7f00:1".parse().unwrap()).unwrap_err();
    /// assert_eq!(refusal.reason(), BlockReason::Loopback);
    /// ```
    pub fn reason(&self) -> BlockReason {
        self.reason
    }
}

impl fmt::Display for BlockedAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            None => write!(formatter, "{} is {}", self.address, self.reason),
            Some((embedding, ipv4)) => {
                let form = match embedding {
                    Embedding::Mapped => "an IPv4-mapped form",
                    Embedding::Nat64 => "a NAT64 form",
                    Embedding::SixToFour => "a 6to4 form",
                };
                write!(formatter, "{} is {form} of {ipv4}, {}", self.address, self.reason)
            }
        }
    }
}

impl std::error::Error for BlockedAddress {}

/// Whether `address` is inside `network/prefix_length` (IPv4).
fn in_ipv4_range(address: Ipv4Addr, network: [u8; 4], prefix_length: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix_length).unwrap_or(0);
    u32::from(address) & mask == u32::from_be_bytes(network) & mask
}

/// Whether `address` is inside `network/prefix_length` (IPv6).
fn in_ipv6_range(address: Ipv6Addr, network: Ipv6Addr, prefix_length: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix_length).unwrap_or(0);
    u128::from(address) & mask == u128::from(network) & mask
}

/// The special IPv4 ranges, most specific first (the broadcast address lies in 240/4).
const IPV4_RANGES: &[([u8; 4], u32, BlockReason)] = &[
    ([0, 0, 0, 0], 32, BlockReason::Unspecified),
    ([255, 255, 255, 255], 32, BlockReason::Broadcast),
    ([0, 0, 0, 0], 8, BlockReason::ThisNetwork),
    ([10, 0, 0, 0], 8, BlockReason::Private),
    ([100, 64, 0, 0], 10, BlockReason::SharedAddressSpace),
    ([127, 0, 0, 0], 8, BlockReason::Loopback),
    ([169, 254, 0, 0], 16, BlockReason::LinkLocal),
    ([172, 16, 0, 0], 12, BlockReason::Private),
    ([192, 0, 0, 0], 24, BlockReason::ProtocolAssignment),
    ([192, 0, 2, 0], 24, BlockReason::Documentation),
    ([192, 88, 99, 0], 24, BlockReason::Relay6to4),
    ([192, 168, 0, 0], 16, BlockReason::Private),
    ([198, 18, 0, 0], 15, BlockReason::Benchmarking),
    ([198, 51, 100, 0], 24, BlockReason::Documentation),
    ([203, 0, 113, 0], 24, BlockReason::Documentation),
    ([224, 0, 0, 0], 4, BlockReason::Multicast),
    ([240, 0, 0, 0], 4, BlockReason::Reserved),
];

fn ipv4_reason(address: Ipv4Addr) -> Option<BlockReason> {
    IPV4_RANGES
        .iter()
        .find(|(network, prefix_length, _)| in_ipv4_range(address, *network, *prefix_length))
        .map(|(_, _, reason)| *reason)
}

/// The special IPv6 ranges checked after the embedded-IPv4 forms, most specific first.
const IPV6_RANGES: &[(Ipv6Addr, u32, BlockReason)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, BlockReason::Unspecified),
    (Ipv6Addr::LOCALHOST, 128, BlockReason::Loopback),
    (Ipv6Addr::UNSPECIFIED, 96, BlockReason::Ipv4Compatible),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, BlockReason::LocalNat64),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, BlockReason::DiscardOnly),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, BlockReason::Teredo),
    (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0), 48, BlockReason::Benchmarking),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, BlockReason::ProtocolAssignment),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, BlockReason::Documentation),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, BlockReason::Documentation),
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16, BlockReason::SegmentRouting),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, BlockReason::UniqueLocal),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, BlockReason::LinkLocal),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, BlockReason::SiteLocal),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, BlockReason::Multicast),
];

fn ipv6_reason(address: Ipv6Addr) -> Option<(BlockReason, Option<(Embedding, Ipv4Addr)>)> {
    // An IPv6 address that reaches an IPv4 host is judged by that host's address.
    if let Some((embedding, ipv4)) = embedded_ipv4(address) {
        return ipv4_reason(ipv4).map(|reason| (reason, Some((embedding, ipv4))));
    }
    IPV6_RANGES
        .iter()
        .find(|(network, prefix_length, _)| in_ipv6_range(address, *network, *prefix_length))
        .map(|(_, _, reason)| (*reason, None))
}

/// The IPv4 address an IPv6 address leads to, for the forms that lead to one.
fn embedded_ipv4(address: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let octets = address.octets();
    let last_four = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if in_ipv6_range(address, Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96) {
        Some((Embedding::Mapped, last_four))
    } else if in_ipv6_range(address, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        Some((Embedding::Nat64, last_four))
    } else if in_ipv6_range(address, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        Some((Embedding::SixToFour, Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5])))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(address: &str) -> IpAddr {
        address.parse().unwrap_or_else(|error| panic!("test address {address}: {error}"))
    }

    #[test]
    fn refuses_special_addresses_with_their_reason() {
        let cases: &[(&str, BlockReason)] = &[
            ("0.0.0.0", BlockReason::Unspecified),
            ("0.1.2.3", BlockReason::ThisNetwork),
            ("10.0.0.1", BlockReason::Private),
            ("10.255.255.255", BlockReason::Private),
            ("100.64.0.1", BlockReason::SharedAddressSpace),
            ("100.127.255.254", BlockReason::SharedAddressSpace),
            ("127.0.0.1", BlockReason::Loopback),
            ("127.255.255.254", BlockReason::Loopback),
            ("169.254.169.254", BlockReason::LinkLocal),
            ("172.16.0.1", BlockReason::Private),
            ("172.31.255.255", BlockReason::Private),
            ("192.0.0.8", BlockReason::ProtocolAssignment),
            ("192.0.2.1", BlockReason::Documentation),
            ("192.88.99.1", BlockReason::Relay6to4),
            ("192.168.1.1", BlockReason::Private),
            ("198.18.0.1", BlockReason::Benchmarking),
            ("198.19.255.255", BlockReason::Benchmarking),
            ("198.51.100.7", BlockReason::Documentation),
            ("203.0.113.9", BlockReason::Documentation),
            ("224.0.0.1", BlockReason::Multicast),
            ("239.255.255.250", BlockReason::Multicast),
            ("240.0.0.1", BlockReason::Reserved),
            ("255.255.255.254", BlockReason::Reserved),
            ("255.255.255.255", BlockReason::Broadcast),
            ("::", BlockReason::Unspecified),
            ("::1", BlockReason::Loopback),
            ("::127.0.0.1", BlockReason::Ipv4Compatible),
            ("::8.8.8.8", BlockReason::Ipv4Compatible),
            ("::ffff:127.0.0.1", BlockReason::Loopback),
            ("::ffff:10.1.2.3", BlockReason::Private),
            ("::ffff:169.254.169.254", BlockReason::LinkLocal),
            ("::ffff:0.0.0.0", BlockReason::Unspecified),
            ("64:ff9b::7f00:1", BlockReason::Loopback),
            ("64:ff9b::192.168.0.1", BlockReason::Private),
            ("64:ff9b:1::1", BlockReason::LocalNat64),
            ("2002:7f00:1::1", BlockReason::Loopback),
            ("2002:a00:1::", BlockReason::Private),
            ("100::1", BlockReason::DiscardOnly),
            ("2001::1", BlockReason::Teredo),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", BlockReason::Teredo),
            ("2001:2::1", BlockReason::Benchmarking),
            ("2001:10::1", BlockReason::ProtocolAssignment),
            ("2001:1ff::1", BlockReason::ProtocolAssignment),
            ("2001:db8::1", BlockReason::Documentation),
            ("3fff::1", BlockReason::Documentation),
            ("5f00::1", BlockReason::SegmentRouting),
            ("fc00::1", BlockReason::UniqueLocal),
            ("fd12:3456:789a::1", BlockReason::UniqueLocal),
            ("fe80::1", BlockReason::LinkLocal),
            ("febf::1", BlockReason::LinkLocal),
            ("fec0::1", BlockReason::SiteLocal),
            ("ff02::1", BlockReason::Multicast),
            ("ff0e::1", BlockReason::Multicast),
        ];
        for (address, expected) in cases {
            let refusal = AddressGuard::new().check(parse(address));
            match refusal {
                Err(refusal) => assert_eq!(refusal.reason(), *expected, "{address}"),
                Ok(()) => panic!("{address} should be refused as {expected}"),
            }
        }
    }

    #[test]
    fn allows_public_addresses() {
        let cases = [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.88.98.1",
            "192.167.255.255",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
            "2001:200::1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "fbff::1",
            "fe00::1",
        ];
        for address in cases {
            assert_eq!(AddressGuard::new().check(parse(address)), Ok(()), "{address}");
        }
    }

    #[test]
    fn allow_private_networks_allows_everything() {
        let guard = AddressGuard::allow_private_networks();
        for address in ["127.0.0.1", "::1", "10.0.0.1", "fd00::1", "169.254.169.254", "::ffff:127.0.0.1", "0.0.0.0"] {
            assert_eq!(guard.check(parse(address)), Ok(()), "{address}");
        }
    }

    #[test]
    fn the_default_is_strict() {
        assert_eq!(AddressGuard::default(), AddressGuard::new());
        assert!(AddressGuard::default().check(parse("127.0.0.1")).is_err());
    }

    #[test]
    fn messages_name_the_address_and_the_range() {
        let cases = [
            ("127.0.0.1", "127.0.0.1 is a loopback address"),
            ("::1", "::1 is a loopback address"),
            ("10.0.0.1", "10.0.0.1 is a private address"),
            ("0.0.0.0", "0.0.0.0 is the unspecified address"),
            ("::ffff:127.0.0.1", "::ffff:127.0.0.1 is an IPv4-mapped form of 127.0.0.1, a loopback address"),
            ("64:ff9b::a00:1", "64:ff9b::a00:1 is a NAT64 form of 10.0.0.1, a private address"),
            ("2002:a9fe:a9fe::", "2002:a9fe:a9fe:: is a 6to4 form of 169.254.169.254, a link-local address"),
        ];
        for (address, expected) in cases {
            let message = AddressGuard::new().check(parse(address)).map_err(|refusal| refusal.to_string());
            assert_eq!(message, Err(expected.to_owned()), "{address}");
        }
    }
}
