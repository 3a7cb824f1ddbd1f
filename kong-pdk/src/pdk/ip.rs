//! IP networks as plugin configuration: a list of addresses and CIDR ranges (Kong's
//! `ip_or_cidr` typedef), parsed once when the configuration loads and matched per request.

use std::net::IpAddr;

use serde::Deserialize;

use crate::schema::{ConfigType, FieldSchema, typedefs};

/// Addresses and CIDR ranges, IPv4 and IPv6: a config field of Kong's
/// `{ type = "array", elements = typedefs.ip_or_cidr }`.
///
/// ```
/// use kong_pdk::pdk::Networks;
/// let nets: Networks = serde_json::from_value(serde_json::json!(["10.0.0.0/8", "::1"])).unwrap();
/// assert!(nets.contains("10.1.2.3".parse().unwrap()));
/// assert!(nets.contains("::1".parse().unwrap()));
/// assert!(!nets.contains("192.0.2.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<(IpAddr, u8)>);

impl Networks {
    /// Parses each entry (`1.2.3.4`, `1.2.3.0/24`, `::1`, `2001:db8::/32`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Networks, String> {
        entries
            .iter()
            .map(|e| {
                let e = e.as_ref();
                let (addr, bits) = e.split_once('/').map_or((e, None), |(a, b)| (a, Some(b)));
                let ip: IpAddr = addr.parse().map_err(|_| format!("invalid ip or cidr range: '{e}'"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits = match bits {
                    Some(b) => b
                        .parse::<u8>()
                        .ok()
                        .filter(|b| *b <= max)
                        .ok_or_else(|| format!("invalid ip or cidr range: '{e}'"))?,
                    None => max,
                };
                Ok((ip, bits))
            })
            .collect::<Result<_, _>>()
            .map(Networks)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the addresses or in one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .any(|(net, bits)| crate::model::in_network(ip, *net, *bits))
    }
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(d)?;
        Networks::parse(&entries).map_err(serde::de::Error::custom)
    }
}

impl ConfigType for Networks {
    fn field_schema() -> FieldSchema {
        FieldSchema::array_of(typedefs::ip_or_cidr::schema())
    }
}
