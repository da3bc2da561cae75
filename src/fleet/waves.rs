//! The order a rollout takes the fleet in (issue 24's plan, pure): `--waves 1,25%,100%` read as
//! cumulative sizes (the first wave one host, the canary; then up to a quarter of the fleet; then
//! all), the instances in service ordered so that each wave spreads across Availability Zones,
//! and the plan kept true when instances join or leave the group during the rollout.

use std::collections::BTreeMap;

/// One entry of `--waves`: how many hosts have the new release once this wave is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Hosts(usize),
    Percent(u8),
}

impl Size {
    /// The hosts this size means in a fleet of `n` (a share rounds up: 25 % of 6 is 2).
    fn of(self, n: usize) -> usize {
        match self {
            Size::Hosts(k) => k.min(n),
            Size::Percent(p) => (n * usize::from(p)).div_ceil(100),
        }
    }
}

/// `1,25%,100%`: counts (at least 1) and shares (1 to 100 %), growing, the last `100%`.
pub fn parse(text: &str) -> Result<Vec<Size>, String> {
    let mut sizes = Vec::new();
    for (i, part) in text.split(',').map(str::trim).enumerate() {
        let size = match part.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Size::Percent(p),
                _ => return Err(format!("wave {} ({part:?}): a share is 1% to 100%", i + 1)),
            },
            None => match part.parse::<usize>() {
                Ok(k) if k >= 1 => Size::Hosts(k),
                _ => {
                    return Err(format!(
                    "wave {} ({part:?}): give a number of hosts (1 or more) or a share such as 25%",
                    i + 1
                ))
                }
            },
        };
        let grows = match (sizes.last(), size) {
            (Some(Size::Hosts(a)), Size::Hosts(b)) => b > *a,
            (Some(Size::Percent(a)), Size::Percent(b)) => b > *a,
            _ => true,
        };
        if !grows {
            return Err(format!(
                "wave {} ({part:?}) is not larger than the one before: sizes count every host swapped so far",
                i + 1
            ));
        }
        sizes.push(size);
    }
    if sizes.last() != Some(&Size::Percent(100)) {
        return Err(format!(
            "{text:?}: the last wave must be 100% (every host), e.g. 1,25%,100%"
        ));
    }
    Ok(sizes)
}

/// An instance in service and its Availability Zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: String,
    pub zone: String,
}

/// The instances in rollout order: one from each zone in turn (zones by name, instances by id
/// within a zone), so any prefix of the order spreads across zones.
pub fn order(hosts: &[Host]) -> Vec<String> {
    let mut by_zone: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for h in hosts {
        by_zone.entry(&h.zone).or_default().push(&h.id);
    }
    for ids in by_zone.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    let mut out = Vec::with_capacity(hosts.len());
    for round in 0.. {
        let before = out.len();
        for ids in by_zone.values() {
            if let Some(id) = ids.get(round) {
                out.push(id.to_string());
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}

/// The waves: each holds the hosts its size adds to the ones before. A size that adds no host
/// (1, then 10 % of a fleet of 5) makes no wave.
pub fn plan(hosts: &[Host], sizes: &[Size]) -> Vec<Vec<String>> {
    let ordered = order(hosts);
    let mut waves = Vec::new();
    let mut done = 0;
    for s in sizes {
        let upto = s.of(ordered.len()).max(done);
        if upto > done {
            waves.push(ordered[done..upto].to_vec());
            done = upto;
        }
    }
    if done < ordered.len() {
        waves.push(ordered[done..].to_vec());
    }
    waves
}

/// The plan after the group changed, `opened` waves being open already. Before any wave opens
/// the plan is made again (a canary that left is replaced by the next host). After: hosts that
/// left are dropped from every wave, hosts that joined (they boot on the stack's metadata, which
/// names the new release, and hold it like every host until their wave opens) go to the last
/// wave not opened yet, or, when every wave is open, to a wave of their own that opens at once.
pub fn rebalance(
    waves: &[Vec<String>],
    opened: usize,
    now: &[Host],
    sizes: &[Size],
) -> Vec<Vec<String>> {
    if opened == 0 {
        return plan(now, sizes);
    }
    let in_service: std::collections::BTreeSet<&str> = now.iter().map(|h| h.id.as_str()).collect();
    let planned: std::collections::BTreeSet<&str> =
        waves.iter().flatten().map(String::as_str).collect();
    let mut out: Vec<Vec<String>> = waves
        .iter()
        .map(|w| {
            w.iter()
                .filter(|id| in_service.contains(id.as_str()))
                .cloned()
                .collect()
        })
        .collect();
    let joined: Vec<Host> = now
        .iter()
        .filter(|h| !planned.contains(h.id.as_str()))
        .cloned()
        .collect();
    if !joined.is_empty() {
        let ids = order(&joined);
        match out.len() {
            n if opened < n => out[n - 1].extend(ids),
            _ => out.push(ids),
        }
    }
    // an emptied wave that is not open yet has nothing to wait for
    let mut kept = Vec::new();
    for (i, w) in out.into_iter().enumerate() {
        if i < opened || !w.is_empty() {
            kept.push(w);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(spec: &[(&str, &str)]) -> Vec<Host> {
        spec.iter()
            .map(|(id, zone)| Host {
                id: id.to_string(),
                zone: zone.to_string(),
            })
            .collect()
    }

    fn eight() -> Vec<Host> {
        hosts(&[
            ("i-1", "a"),
            ("i-2", "a"),
            ("i-3", "a"),
            ("i-4", "b"),
            ("i-5", "b"),
            ("i-6", "b"),
            ("i-7", "c"),
            ("i-8", "c"),
        ])
    }

    #[test]
    fn sizes_are_counts_or_shares_growing_to_every_host() {
        assert_eq!(
            parse("1, 25%,100%").unwrap(),
            [Size::Hosts(1), Size::Percent(25), Size::Percent(100)]
        );
        assert_eq!(parse("100%").unwrap(), [Size::Percent(100)]);
        for (bad, says) in [
            ("0,100%", "wave 1"),
            ("1,0%,100%", "a share is 1% to 100%"),
            ("1,150%", "a share is 1% to 100%"),
            ("1,x,100%", "wave 2"),
            ("50%,25%,100%", "not larger"),
            ("3,2,100%", "not larger"),
            ("1,50%", "the last wave must be 100%"),
            ("", "wave 1"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_order_takes_each_zone_in_turn() {
        assert_eq!(
            order(&eight()),
            ["i-1", "i-4", "i-7", "i-2", "i-5", "i-8", "i-3", "i-6"]
        );
        assert_eq!(order(&[]), Vec::<String>::new());
    }

    #[test]
    fn waves_hold_what_each_size_adds_the_first_one_host() {
        let waves = plan(&eight(), &parse("1,50%,100%").unwrap());
        assert_eq!(
            waves,
            [
                vec!["i-1"],
                vec!["i-4", "i-7", "i-2"],
                vec!["i-5", "i-8", "i-3", "i-6"],
            ]
        );
        // the second wave spreads across zones
        let zones: std::collections::BTreeSet<_> = waves[1]
            .iter()
            .map(|id| eight().into_iter().find(|h| &h.id == id).unwrap().zone)
            .collect();
        assert_eq!(zones.len(), 3);
        // 25 % of 6 is 2 (rounded up); a size that adds nothing makes no wave
        let six = &eight()[..6];
        assert_eq!(
            plan(six, &parse("1,10%,25%,100%").unwrap())
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>(),
            [1, 1, 4]
        );
        assert_eq!(plan(&eight(), &parse("100%").unwrap()).len(), 1);
        assert!(plan(&[], &parse("1,100%").unwrap()).is_empty());
        assert_eq!(
            plan(&eight()[..1], &parse("1,50%,100%").unwrap()),
            [vec!["i-1"]]
        );
    }

    #[test]
    fn hosts_that_leave_are_dropped_and_hosts_that_join_wait_for_the_last_wave() {
        let waves = plan(&eight(), &parse("1,50%,100%").unwrap());
        // i-2 (wave 2) and i-5 (wave 3) left; i-9 joined, while wave 1 is open
        let mut now: Vec<Host> = eight()
            .into_iter()
            .filter(|h| h.id != "i-2" && h.id != "i-5")
            .collect();
        now.extend(hosts(&[("i-9", "a")]));
        let sizes = parse("1,50%,100%").unwrap();
        let after = rebalance(&waves, 1, &now, &sizes);
        assert_eq!(
            after,
            [
                vec!["i-1"],
                vec!["i-4", "i-7"],
                vec!["i-8", "i-3", "i-6", "i-9"],
            ]
        );
        // every wave open: the newcomer gets a wave of its own, opened at once
        let all_open = rebalance(
            &waves,
            3,
            &[eight(), hosts(&[("i-9", "b")])].concat(),
            &sizes,
        );
        assert_eq!(all_open.len(), 4);
        assert_eq!(all_open[3], ["i-9"]);
        // the canary host left before any wave opened: the plan is made again, a new canary
        // from the same zone first
        let no_canary: Vec<Host> = eight().into_iter().filter(|h| h.id != "i-1").collect();
        let after = rebalance(&waves, 0, &no_canary, &sizes);
        assert_eq!(after[0], ["i-2"]);
        assert_eq!(after.iter().map(Vec::len).sum::<usize>(), 7);
        // an open wave that emptied stays (its index is how far the rollout got)
        let after = rebalance(&waves, 1, &no_canary, &sizes);
        assert_eq!(after[0], Vec::<String>::new());
        assert_eq!(after.len(), 3);
    }
}
