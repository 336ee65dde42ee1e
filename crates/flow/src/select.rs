//! The flow selection language of `--select`: which finished flows a command keeps, by address,
//! network, port and protocol. It is not BPF (BPF filters packets before the flow engine; this
//! selects flows after it) and it never reads packets.
//!
//! Grammar, case-insensitive, no parentheses: `expr := conj ("or" conj)*`,
//! `conj := ["not"] term ("and" ["not"] term)*`, and `term` one of
//! `host|src|dst ADDR[/PREFIX]` (`net` is `host` with a prefix), `port|sport|dport N` or
//! `proto tcp|udp|icmp|icmp6|N`. `and` binds tighter than `or`; `src`, `dst`, `sport` and `dport`
//! are the flow's forward direction (its first packet's sender). The empty expression selects
//! every flow.

use std::net::IpAddr;

use crate::engine::FlowRecord;

/// An address or a network (`10.0.0.0/8`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// The address, with the bits past the prefix cleared.
    pub addr: IpAddr,
    /// Prefix length (32 or 128 for a single address).
    pub prefix: u8,
}

impl Network {
    /// Whether `ip` lies in the network (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        let n = Network { addr, prefix };
        // Clear the host bits so equal networks compare equal.
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Some(Network { addr, ..n })
    }
}

/// One condition on a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Either endpoint in the network.
    Host(Network),
    /// Forward source in the network.
    Src(Network),
    /// Forward destination in the network.
    Dst(Network),
    /// Either port.
    Port(u16),
    /// Forward source port.
    Sport(u16),
    /// Forward destination port.
    Dport(u16),
    /// IP protocol number.
    Proto(u8),
}

impl Condition {
    fn holds(&self, f: &FlowRecord) -> bool {
        match *self {
            Condition::Host(n) => n.contains(f.src) || n.contains(f.dst),
            Condition::Src(n) => n.contains(f.src),
            Condition::Dst(n) => n.contains(f.dst),
            Condition::Port(p) => f.src_port == p || f.dst_port == p,
            Condition::Sport(p) => f.src_port == p,
            Condition::Dport(p) => f.dst_port == p,
            Condition::Proto(p) => f.protocol == p,
        }
    }
}

/// A condition, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    /// `not` before it.
    pub negated: bool,
    /// The condition.
    pub condition: Condition,
}

/// A parsed selection: a flow is selected iff every literal of some conjunction holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowSelector {
    /// The `or`-joined conjunctions (empty: every flow).
    pub any_of: Vec<Vec<Literal>>,
}

/// A selection that does not parse: the expression and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--select {expr:?}: {message}")]
pub struct SelectError {
    /// The expression.
    pub expr: String,
    /// What is wrong, with the word at fault.
    pub message: String,
}

/// The most words an expression may have (a bound on parse work for untrusted input).
pub const MAX_WORDS: usize = 4096;

impl FlowSelector {
    /// Parses an expression (see the module documentation).
    pub fn parse(expr: &str) -> Result<Self, SelectError> {
        let err = |message: String| SelectError {
            expr: expr.to_string(),
            message,
        };
        let words: Vec<String> = expr
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        if words.len() > MAX_WORDS {
            return Err(err(format!("more than {MAX_WORDS} words")));
        }
        let mut any_of = Vec::new();
        let mut conj: Vec<Literal> = Vec::new();
        let mut i = 0;
        let mut expect_term = !words.is_empty();
        while i < words.len() {
            if !expect_term {
                match words[i].as_str() {
                    "and" => {}
                    "or" => any_of.push(std::mem::take(&mut conj)),
                    w => return Err(err(format!("expected `and` or `or` before {w:?}"))),
                }
                i += 1;
                expect_term = true;
                continue;
            }
            let negated = words[i] == "not";
            if negated {
                i += 1;
            }
            let (Some(key), Some(value)) = (words.get(i), words.get(i + 1)) else {
                return Err(err("a term is `host|src|dst|net ADDR[/PREFIX]`, `port|sport|dport N` or `proto tcp|udp|icmp|N`".into()));
            };
            let net = || {
                Network::parse(value).ok_or_else(|| {
                    err(format!(
                        "{value:?} is not an IP address or network (ADDR/PREFIX)"
                    ))
                })
            };
            let port = || {
                value
                    .parse::<u16>()
                    .map_err(|_| err(format!("{value:?} is not a port (0-65535)")))
            };
            let condition = match key.as_str() {
                "host" | "net" => Condition::Host(net()?),
                "src" => Condition::Src(net()?),
                "dst" => Condition::Dst(net()?),
                "port" => Condition::Port(port()?),
                "sport" => Condition::Sport(port()?),
                "dport" => Condition::Dport(port()?),
                "proto" => Condition::Proto(match value.as_str() {
                    "tcp" => 6,
                    "udp" => 17,
                    "icmp" => 1,
                    "icmp6" | "icmpv6" => 58,
                    n => n.parse().map_err(|_| {
                        err(format!(
                            "protocol {value:?} is not tcp, udp, icmp, icmp6 or a number (0-255)"
                        ))
                    })?,
                }),
                other => {
                    return Err(err(format!(
                        "unknown term {other:?} (host, net, src, dst, port, sport, dport, proto; not, and, or)"
                    )))
                }
            };
            conj.push(Literal { negated, condition });
            i += 2;
            expect_term = false;
        }
        if expect_term && !words.is_empty() {
            return Err(err("ends with `and`, `or` or `not`".into()));
        }
        if !conj.is_empty() {
            any_of.push(conj);
        }
        Ok(FlowSelector { any_of })
    }

    /// Whether the flow is selected.
    pub fn matches(&self, f: &FlowRecord) -> bool {
        self.any_of.is_empty()
            || self
                .any_of
                .iter()
                .any(|conj| conj.iter().all(|l| l.condition.holds(f) != l.negated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Network {
        Network::parse(s).expect("network")
    }

    #[test]
    fn networks_contain_their_addresses() {
        assert!(net("10.0.0.0/8").contains("10.200.3.4".parse().expect("ip")));
        assert!(!net("10.0.0.0/8").contains("11.0.0.1".parse().expect("ip")));
        assert!(net("10.1.2.3/8") == net("10.0.0.0/8"));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().expect("ip")));
        assert!(!net("0.0.0.0/0").contains("::1".parse().expect("ip")));
        assert!(net("2001:db8::/32").contains("2001:db8:1::5".parse().expect("ip")));
        assert!(net("192.168.1.7").contains("192.168.1.7".parse().expect("ip")));
        assert!(!net("192.168.1.7").contains("192.168.1.8".parse().expect("ip")));
        assert!(Network::parse("10.0.0.0/33").is_none());
        assert!(Network::parse("10.0.0/8").is_none());
    }

    #[test]
    fn precedence_negation_and_errors() {
        let s = FlowSelector::parse("port 22 and proto tcp or not net 10.0.0.0/8").expect("ok");
        assert_eq!(s.any_of.len(), 2);
        assert_eq!(s.any_of[0].len(), 2);
        assert!(s.any_of[1][0].negated);
        assert_eq!(FlowSelector::parse("").expect("empty").any_of.len(), 0);
        for bad in [
            "host",
            "host 1.2.3.4 port 22",
            "port 70000",
            "port 22 and",
            "not",
            "bogus 1",
            "proto 300",
        ] {
            let e = FlowSelector::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("--select"), "{e}");
        }
        assert_eq!(
            FlowSelector::parse("PROTO 47").expect("gre").any_of[0][0].condition,
            Condition::Proto(47)
        );
    }
}
