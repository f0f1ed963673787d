//! Subnets for env networks. Left to itself, Docker gives every bridge network a whole /16
//! or /20 from its default pools, which run out after about thirty networks; Slipway instead
//! carves small subnets out of its own pool, skipping any range another network already uses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 range in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        let mask = Self::mask(self.prefix.min(other.prefix));
        self.base & mask == other.base & mask
    }

    /// The `index`-th subnet of size `/prefix` inside this range, if there is one.
    pub fn subnet(&self, prefix: u8, index: u32) -> Option<Cidr> {
        if prefix < self.prefix || prefix > 30 {
            return None;
        }
        let count = 1u64 << (prefix - self.prefix);
        if u64::from(index) >= count {
            return None;
        }
        let base = self.base + (index << (32 - prefix));
        Some(Cidr { base, prefix })
    }

    pub fn subnet_count(&self, prefix: u8) -> u32 {
        if prefix < self.prefix {
            return 0;
        }
        (1u64 << (prefix - self.prefix)).min(u64::from(u32::MAX)) as u32
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a CIDR range like 172.16.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{text}`: `{addr}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("`{text}`: bad prefix length"))?;
        Ok(Cidr {
            base: u32::from(addr) & Self::mask(prefix),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// Where env networks get their subnets: `/prefix` pieces of `range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetPool {
    pub range: Cidr,
    pub prefix: u8,
}

impl Default for SubnetPool {
    /// 172.16.0.0/16 is private and outside Docker's default pools (172.17–31, 192.168);
    /// /24 pieces give 256 envs of up to 253 containers each.
    fn default() -> Self {
        SubnetPool {
            range: "172.16.0.0/16".parse().expect("valid"),
            prefix: 24,
        }
    }
}

impl SubnetPool {
    /// The first subnet of the pool that overlaps none of `taken`.
    pub fn first_free(&self, taken: &[Cidr]) -> Option<Cidr> {
        (0..self.range.subnet_count(self.prefix))
            .filter_map(|i| self.range.subnet(self.prefix, i))
            .find(|candidate| taken.iter().all(|t| !t.overlaps(candidate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_skip_taken_ranges() {
        let pool = SubnetPool::default();
        assert_eq!(pool.first_free(&[]).unwrap().to_string(), "172.16.0.0/24");
        let taken: Vec<Cidr> = ["172.16.0.0/24", "172.16.1.0/25", "10.0.0.0/8"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(
            pool.first_free(&taken).unwrap().to_string(),
            "172.16.2.0/24"
        );
        let everything: Cidr = "172.0.0.0/8".parse().unwrap();
        assert_eq!(pool.first_free(&[everything]), None);
    }

    #[test]
    fn cidrs_parse_and_overlap() {
        let a: Cidr = "172.17.5.9/16".parse().unwrap();
        assert_eq!(a.to_string(), "172.17.0.0/16");
        assert!(a.overlaps(&"172.17.200.0/24".parse().unwrap()));
        assert!(!a.overlaps(&"172.18.0.0/24".parse().unwrap()));
        assert!("172.16.0.0".parse::<Cidr>().is_err());
        assert!("300.1.1.1/8".parse::<Cidr>().is_err());
    }
}
