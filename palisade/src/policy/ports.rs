//! Port sets and their encoding as LPM prefixes over the 16 port bits.

/// An inclusive port range of one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub protocol: u8,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn all(protocol: u8) -> Self {
        Self {
            protocol,
            first: 0,
            last: u16::MAX,
        }
    }

    pub const fn contains(&self, protocol: u8, port: u16) -> bool {
        self.protocol == protocol && self.first <= port && port <= self.last
    }
}

/// What a rule's `ports` admit, once named ports are resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortSet {
    /// `ports` empty or absent: every port of every protocol (ICMP included).
    All,
    /// A sorted, de-duplicated list of ranges; empty when nothing resolved (admits nothing).
    Ranges(Vec<PortRange>),
}

impl PortSet {
    /// The ranges sorted, with overlapping and adjacent ones of a protocol joined: one set,
    /// one spelling (two rules' ports compare equal when they admit the same ports).
    pub fn ranges(mut ranges: Vec<PortRange>) -> Self {
        ranges.sort();
        let mut joined: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match joined.last_mut() {
                Some(last)
                    if last.protocol == r.protocol
                        && u32::from(r.first) <= u32::from(last.last) + 1 =>
                {
                    last.last = last.last.max(r.last);
                }
                _ => joined.push(r),
            }
        }
        Self::Ranges(joined)
    }

    /// The ports either set admits.
    pub fn union(&self, other: &Self) -> Self {
        match (self, other) {
            (Self::Ranges(a), Self::Ranges(b)) => Self::ranges([&a[..], &b[..]].concat()),
            _ => Self::All,
        }
    }

    pub fn contains(&self, protocol: u8, port: u16) -> bool {
        match self {
            Self::All => true,
            Self::Ranges(r) => r.iter().any(|r| r.contains(protocol, port)),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Ranges(r) if r.is_empty())
    }
}

/// A prefix over the port bits: `len` leading bits of `value` are significant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortPrefix {
    pub value: u16,
    pub len: u8,
}

impl PortPrefix {
    pub const fn first(&self) -> u16 {
        self.value
    }

    pub const fn last(&self) -> u16 {
        if self.len >= 16 {
            self.value
        } else {
            self.value | (u16::MAX >> self.len)
        }
    }
}

/// The minimal set of prefixes covering `first..=last` exactly (at most 30 for 16 bits).
pub fn range_to_prefixes(first: u16, last: u16) -> Vec<PortPrefix> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(first), u32::from(last));
    while lo <= hi {
        // The largest aligned block starting at `lo` that does not pass `hi`.
        let mut size_bits = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while lo + (1 << size_bits) - 1 > hi {
            size_bits -= 1;
        }
        out.push(PortPrefix {
            value: lo as u16,
            len: (16 - size_bits) as u8,
        });
        lo += 1 << size_bits;
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tcp(first: u16, last: u16) -> PortRange {
        PortRange {
            protocol: 6,
            first,
            last,
        }
    }

    #[test]
    fn overlapping_and_adjacent_ranges_of_a_protocol_join_and_others_do_not() {
        let udp = PortRange {
            protocol: 17,
            first: 81,
            last: 81,
        };
        let set = PortSet::ranges(vec![
            tcp(85, 90),
            udp,
            tcp(80, 84),
            tcp(88, 95),
            tcp(97, 97),
        ]);
        assert_eq!(set, PortSet::Ranges(vec![tcp(80, 95), tcp(97, 97), udp]));
        assert_eq!(
            PortSet::ranges(vec![tcp(65_535, 65_535), tcp(0, 65_534)]),
            PortSet::Ranges(vec![tcp(0, 65_535)])
        );
    }

    #[test]
    fn a_union_holds_the_ports_of_both_and_every_port_with_all() {
        let a = PortSet::ranges(vec![tcp(80, 80)]);
        let b = PortSet::ranges(vec![tcp(81, 81), tcp(443, 443)]);
        assert_eq!(
            a.union(&b),
            PortSet::Ranges(vec![tcp(80, 81), tcp(443, 443)])
        );
        assert_eq!(a.union(&PortSet::All), PortSet::All);
        assert_eq!(PortSet::ranges(Vec::new()).union(&a), a);
    }

    #[test]
    fn a_single_port_is_one_full_length_prefix() {
        assert_eq!(
            range_to_prefixes(80, 80),
            vec![PortPrefix { value: 80, len: 16 }]
        );
    }

    #[test]
    fn the_whole_range_is_one_zero_length_prefix() {
        assert_eq!(
            range_to_prefixes(0, u16::MAX),
            vec![PortPrefix { value: 0, len: 0 }]
        );
    }

    #[test]
    fn an_end_port_range_costs_at_most_thirty_prefixes() {
        assert_eq!(range_to_prefixes(1, u16::MAX - 1).len(), 30);
    }

    proptest! {
        #[test]
        fn prefixes_cover_exactly_the_range(a: u16, b: u16, probe: u16) {
            let (first, last) = (a.min(b), a.max(b));
            let prefixes = range_to_prefixes(first, last);
            prop_assert!(prefixes.len() <= 30);
            let covered = prefixes.iter().filter(|p| p.first() <= probe && probe <= p.last()).count();
            prop_assert_eq!(covered, usize::from(first <= probe && probe <= last));
        }
    }
}
