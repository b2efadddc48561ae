//! The kernel module against a real kernel: addresses, links, default
//! routes and events inside network namespaces made by testbed's netlab.
//! Needs root (skipped without it, failing under CI=true).

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use purelb_agent::kernel::{
    AddressFollower, AddressOptions, EventGroups, EventStream, FollowedAddress, Kernel,
    KernelError, KernelEvent, PURELB_ADDR_PROTO, flags,
};
use purelb_api::pool::IpFamily;
use serde_json::Value;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use testbed::netlab::{Lab, LinkSpec, Ns, require_root};

const T: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// `ip -j addr show dev <ifname>`'s `addr_info` entry for `local`.
fn ip_addr_info(ns: &Ns, ifname: &str, local: &str) -> Result<Option<Value>> {
    let out = ns.ip(&["-j", "addr", "show", "dev", ifname])?;
    let v: Value = serde_json::from_str(&out).context("parsing ip -j addr")?;
    Ok(v.as_array()
        .and_then(|links| links.first())
        .and_then(|l| l["addr_info"].as_array())
        .and_then(|infos| infos.iter().find(|a| a["local"] == local))
        .cloned())
}

fn lifetime(info: &Value, key: &str) -> u64 {
    info[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {info}"))
}

fn node_with_uplink(lab: &Lab) -> Result<(Ns, String)> {
    let n1 = lab.node("n1")?;
    let r1 = lab.router("r1")?;
    let link = lab.link(
        &n1,
        &r1,
        LinkSpec::new()
            .v4("198.51.100.2/24", "198.51.100.1/24")
            .v6("2001:db8:1::2/64", "2001:db8:1::1/64"),
    )?;
    Ok((n1, link.a_if().to_owned()))
}

#[test]
fn addresses_lifetimes_flags_marker_and_removal() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let (n1, eth) = node_with_uplink(&lab)?;
    lab.add_fake_dummy(&n1, "kube-lb0")?;

    let local = AddressOptions {
        valid_lifetime: 300,
        preferred_lifetime: 300,
        no_prefix_route: true,
        no_dad: false,
        deprecated: false,
    };
    // A local VIP with lifetimes and noprefixroute.
    let (eth_idx, lb_idx) = n1.block_on(|| async {
        let k = Kernel::new()?;
        let eth_idx = k.link_by_name(&eth).await?.context("eth link")?.index;
        let lb = k.ensure_link("kube-lb0").await?;
        k.add_address(eth_idx, ip("203.0.113.10"), 24, &local)
            .await?;
        Ok((eth_idx, lb.index))
    })?;
    let info = ip_addr_info(&n1, &eth, "203.0.113.10")?.context("VIP on eth")?;
    assert_eq!(info["prefixlen"], 24, "{info}");
    assert_eq!(info["noprefixroute"], true, "{info}");
    assert_eq!(info["dynamic"], true, "not permanent: {info}");
    let valid = lifetime(&info, "valid_life_time");
    assert!((295..=300).contains(&valid), "{info}");
    assert!(
        (295..=300).contains(&lifetime(&info, "preferred_life_time")),
        "{info}"
    );
    let routes = n1.ip(&["-4", "route", "show", "dev", &eth])?;
    assert!(
        !routes.contains("203.0.113.0/24"),
        "noprefixroute, yet: {routes}"
    );

    n1.block_on(|| async {
        let k = Kernel::new()?;
        let all = k.list_addresses().await?;
        let a = all
            .iter()
            .find(|a| a.ip == ip("203.0.113.10"))
            .context("VIP in list_addresses")?;
        assert_eq!(a.ifindex, eth_idx);
        assert_eq!(a.ifname.as_deref(), Some(eth.as_str()));
        assert_eq!(a.prefix_len, 24);
        assert!(a.has_flag(flags::NOPREFIXROUTE), "{a:?}");
        assert!(!a.has_flag(flags::PERMANENT), "{a:?}");
        // IFA_PROTO round trip: the kernel stored our marker.
        assert_eq!(a.protocol, PURELB_ADDR_PROTO, "{a:?}");
        assert!(a.is_owned());
        assert!(
            a.valid_lifetime.is_some_and(|v| (295..=300).contains(&v)),
            "{a:?}"
        );

        // Replace restarts the lifetimes (here: with longer ones).
        let longer = AddressOptions {
            valid_lifetime: 600,
            preferred_lifetime: 600,
            ..local
        };
        k.add_address(eth_idx, ip("203.0.113.10"), 24, &longer)
            .await?;
        let all = k.list_addresses().await?;
        let same: Vec<_> = all.iter().filter(|a| a.ip == ip("203.0.113.10")).collect();
        assert_eq!(same.len(), 1, "replace, not a second address: {same:?}");
        assert!(same[0].valid_lifetime.is_some_and(|v| v > 590), "{same:?}");
        Ok(())
    })?;
    let info = ip_addr_info(&n1, &eth, "203.0.113.10")?.context("VIP on eth")?;
    assert!(lifetime(&info, "valid_life_time") > 590, "{info}");

    // IPv6 local VIP: nodad, deprecated (preferred 0).
    n1.block_on(|| async {
        let k = Kernel::new()?;
        let v6 = AddressOptions {
            no_dad: true,
            deprecated: true,
            ..local
        };
        k.add_address(eth_idx, ip("2001:db8:1::10"), 64, &v6)
            .await?;
        let all = k.list_addresses().await?;
        let a = all
            .iter()
            .find(|a| a.ip == ip("2001:db8:1::10"))
            .context("v6 VIP listed")?;
        assert!(a.has_flag(flags::NODAD), "{a:?}");
        assert!(a.has_flag(flags::DEPRECATED), "{a:?}");
        assert_eq!(a.preferred_lifetime, Some(0), "{a:?}");
        assert!(a.is_ignored_v6());
        assert_eq!(a.protocol, PURELB_ADDR_PROTO);
        Ok(())
    })?;
    let info = ip_addr_info(&n1, &eth, "2001:db8:1::10")?.context("v6 VIP")?;
    assert_eq!(info["nodad"], true, "{info}");
    assert_eq!(info["deprecated"], true, "{info}");
    assert_eq!(lifetime(&info, "preferred_life_time"), 0, "{info}");
    assert!(
        (295..=300).contains(&lifetime(&info, "valid_life_time")),
        "{info}"
    );

    // Remote VIPs: permanent, with the connected route, on the fake dummy.
    n1.block_on(|| async {
        let k = Kernel::new()?;
        let dummy = AddressOptions::default();
        k.add_address(lb_idx, ip("203.0.113.50"), 24, &dummy)
            .await?;
        k.add_address(lb_idx, ip("2001:db8:ff::50"), 120, &dummy)
            .await?;
        let all = k.list_addresses().await?;
        for want in ["203.0.113.50", "2001:db8:ff::50"] {
            let a = all
                .iter()
                .find(|a| a.ip == ip(want))
                .context("remote VIP listed")?;
            assert_eq!(a.valid_lifetime, None, "permanent: {a:?}");
            assert_eq!(a.preferred_lifetime, None, "{a:?}");
            assert!(a.has_flag(flags::PERMANENT), "{a:?}");
            assert!(!a.has_flag(flags::DEPRECATED), "{a:?}");
            assert_eq!(a.ifname.as_deref(), Some("kube-lb0"));
        }
        Ok(())
    })?;
    let info = ip_addr_info(&n1, "kube-lb0", "203.0.113.50")?.context("remote VIP")?;
    assert_eq!(
        lifetime(&info, "valid_life_time"),
        u64::from(u32::MAX),
        "{info}"
    );
    assert!(info.get("noprefixroute").is_none(), "{info}");
    let r4 = n1.ip(&["-4", "route", "show", "dev", "kube-lb0"])?;
    assert!(r4.contains("203.0.113.0/24"), "connected route: {r4}");
    let r6 = n1.ip(&["-6", "route", "show", "dev", "kube-lb0"])?;
    assert!(r6.contains("2001:db8:ff::/120"), "connected route: {r6}");

    // The same IP on two links (different prefix lengths), removed from both.
    n1.ip(&["addr", "add", "203.0.113.77/32", "dev", &eth])?;
    n1.block_on(|| async {
        let k = Kernel::new()?;
        k.add_address(lb_idx, ip("203.0.113.77"), 24, &AddressOptions::default())
            .await?;
        assert_eq!(k.remove_address(ip("203.0.113.77")).await?, 2);
        assert_eq!(k.remove_address(ip("203.0.113.77")).await?, 0);
        Ok(())
    })?;
    assert!(ip_addr_info(&n1, &eth, "203.0.113.77")?.is_none());
    n1.add_addr(&eth, "2001:db8:ff::77/128")?;
    n1.block_on(|| async {
        let k = Kernel::new()?;
        k.add_address(
            lb_idx,
            ip("2001:db8:ff::77"),
            120,
            &AddressOptions::default(),
        )
        .await?;
        assert_eq!(k.remove_address(ip("2001:db8:ff::77")).await?, 2);
        Ok(())
    })?;
    assert!(ip_addr_info(&n1, &eth, "2001:db8:ff::77")?.is_none());
    assert!(ip_addr_info(&n1, "kube-lb0", "203.0.113.77")?.is_none());

    // Addresses added by others carry no marker and are not ours.
    n1.ip(&["addr", "add", "203.0.113.88/32", "dev", "kube-lb0"])?;
    n1.add_addr("kube-lb0", "2001:db8:ff::88/128")?;
    n1.block_on(|| async {
        let k = Kernel::new()?;
        let owned: Vec<IpAddr> = k.owned_addresses().await?.iter().map(|a| a.ip).collect();
        let mut want = vec![
            ip("203.0.113.10"),
            ip("2001:db8:1::10"),
            ip("203.0.113.50"),
            ip("2001:db8:ff::50"),
        ];
        let mut got = owned.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let foreign = k
            .list_addresses()
            .await?
            .into_iter()
            .find(|a| a.ip == ip("203.0.113.88"))
            .context("foreign address listed")?;
        assert_eq!(foreign.protocol, 0);
        Ok(())
    })?;
    Ok(())
}

#[test]
fn replace_marks_an_existing_foreign_address() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let n1 = lab.node("n1")?;
    lab.add_fake_dummy(&n1, "kube-lb0")?;
    n1.ip(&["addr", "add", "203.0.113.5/24", "dev", "kube-lb0"])?;
    n1.block_on(|| async {
        let k = Kernel::new()?;
        let lb = k.link_by_name("kube-lb0").await?.context("kube-lb0")?;
        assert!(k.owned_addresses().await?.is_empty());
        k.add_address(lb.index, ip("203.0.113.5"), 24, &AddressOptions::default())
            .await?;
        let owned = k.owned_addresses().await?;
        assert_eq!(owned.len(), 1, "{owned:?}");
        assert_eq!(owned[0].ip, ip("203.0.113.5"));
        Ok(())
    })
}

#[test]
fn invalid_options_are_refused_before_the_kernel() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let n1 = lab.node("n1")?;
    n1.block_on(|| async {
        let k = Kernel::new()?;
        let lo = k.link_by_name("lo").await?.context("lo")?;
        let bad = AddressOptions {
            valid_lifetime: 60,
            preferred_lifetime: 120,
            ..Default::default()
        };
        let err = k
            .add_address(lo.index, ip("203.0.113.1"), 32, &bad)
            .await
            .expect_err("preferred > valid");
        assert!(matches!(err, KernelError::InvalidAddress { .. }), "{err}");
        let err = k
            .add_address(lo.index, ip("203.0.113.1"), 33, &AddressOptions::default())
            .await
            .expect_err("/33");
        assert!(matches!(err, KernelError::InvalidAddress { .. }), "{err}");
        // The kernel's refusals carry the errno.
        let err = k
            .add_address(9999, ip("203.0.113.1"), 32, &AddressOptions::default())
            .await
            .expect_err("no such link");
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
        Ok(())
    })
}

#[test]
fn links_dummy_mac_state_and_deletion() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let (n1, eth) = node_with_uplink(&lab)?;
    // A down stand-in for the dummy: ensure_link must use it and set it up.
    n1.ip(&["link", "add", "kube-lb0", "type", "ifb"])?;
    let json: Value = serde_json::from_str(&n1.ip(&["-j", "link", "show", "dev", &eth])?)?;
    let want_mac = json[0]["address"].as_str().context("mac")?.to_owned();

    n1.block_on(|| async {
        let k = Kernel::new()?;
        let before = k.link_by_name("kube-lb0").await?.context("kube-lb0")?;
        assert!(!before.admin_up);
        assert_eq!(before.kind.as_deref(), Some("ifb"));
        let lb = k.ensure_link("kube-lb0").await?;
        assert_eq!(lb.index, before.index, "uses the existing link");
        assert!(lb.admin_up && lb.is_up(), "{lb:?}");
        // Idempotent.
        assert_eq!(k.ensure_link("kube-lb0").await?.index, lb.index);

        // No dummy driver on this kernel: a clear error; with one: a dummy.
        match k.ensure_link("plb-test0").await {
            Err(KernelError::DummyUnsupported { name, .. }) => assert_eq!(name, "plb-test0"),
            Ok(l) => {
                assert_eq!(l.kind.as_deref(), Some("dummy"));
                assert!(l.admin_up);
                assert!(k.delete_link("plb-test0").await?);
            }
            Err(e) => bail!("unexpected error creating a dummy: {e}"),
        }

        let e = k.link_by_name(&eth).await?.context("eth")?;
        let mac = k.link_mac(e.index).await?;
        let spelled = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(spelled, want_mac);
        assert!(e.is_up(), "{e:?}");
        assert_eq!(e.kind.as_deref(), Some("veth"));

        let links = k.list_links().await?;
        let lo = links.iter().find(|l| l.name == "lo").context("lo listed")?;
        assert!(lo.loopback && lo.is_up(), "{lo:?}");
        assert!(links.iter().any(|l| l.name == eth));
        assert!(k.link_by_name("nonexistent0").await?.is_none());
        assert!(k.link_by_index(99999).await?.is_none());
        assert!(matches!(
            k.link_mac(99999).await,
            Err(KernelError::LinkIndexNotFound(99999))
        ));

        k.set_link_down(e.index).await?;
        let down = k.link_by_index(e.index).await?.context("eth")?;
        assert!(!down.admin_up && !down.is_up(), "{down:?}");
        k.set_link_up(e.index).await?;

        assert!(k.delete_link("kube-lb0").await?);
        assert!(!k.delete_link("kube-lb0").await?);
        assert!(k.link_by_name("kube-lb0").await?.is_none());
        Ok(())
    })
}

#[test]
fn default_route_interface_is_the_lowest_metric() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let n1 = lab.node("n1")?;
    let r1 = lab.router("r1")?;
    let r2 = lab.router("r2")?;
    let l1 = lab.link(
        &n1,
        &r1,
        LinkSpec::new()
            .v4("198.51.100.2/24", "198.51.100.1/24")
            .v6("2001:db8:1::2/64", "2001:db8:1::1/64"),
    )?;
    let l2 = lab.link(
        &n1,
        &r2,
        LinkSpec::new()
            .v4("203.0.113.2/24", "203.0.113.1/24")
            .v6("2001:db8:2::2/64", "2001:db8:2::1/64"),
    )?;
    let (i1, i2) = n1.block_on(|| async {
        let k = Kernel::new()?;
        assert_eq!(k.default_route_ifindex(IpFamily::V4).await?, None);
        assert_eq!(k.default_route_ifindex(IpFamily::V6).await?, None);
        assert!(k.default_route_link(IpFamily::V4).await?.is_none());
        let i1 = k.link_by_name(l1.a_if()).await?.context("l1")?.index;
        let i2 = k.link_by_name(l2.a_if()).await?.context("l2")?.index;
        Ok((i1, i2))
    })?;

    n1.ip(&[
        "-4",
        "route",
        "add",
        "default",
        "via",
        "198.51.100.1",
        "metric",
        "200",
    ])?;
    n1.ip(&[
        "-4",
        "route",
        "add",
        "default",
        "via",
        "203.0.113.1",
        "metric",
        "100",
    ])?;
    n1.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:1::1",
        "metric",
        "50",
    ])?;
    n1.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:2::1",
        "metric",
        "300",
    ])?;
    // A default route in another table does not count.
    n1.ip(&[
        "-4",
        "route",
        "add",
        "default",
        "via",
        "198.51.100.1",
        "table",
        "100",
    ])?;
    n1.block_on(|| async {
        let k = Kernel::new()?;
        assert_eq!(k.default_route_ifindex(IpFamily::V4).await?, Some(i2));
        assert_eq!(k.default_route_ifindex(IpFamily::V6).await?, Some(i1));
        let link = k.default_route_link(IpFamily::V4).await?.context("v4")?;
        assert_eq!(link.name, l2.a_if());
        Ok(())
    })?;
    // 0.0.0.0/0 spelled out counts as default too.
    n1.ip(&[
        "-4",
        "route",
        "add",
        "0.0.0.0/0",
        "via",
        "198.51.100.1",
        "metric",
        "10",
    ])?;
    n1.block_on(|| async {
        let k = Kernel::new()?;
        assert_eq!(k.default_route_ifindex(IpFamily::V4).await?, Some(i1));
        Ok(())
    })?;
    Ok(())
}

#[test]
fn link_subnets_follow_the_lease_rules() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let (n1, eth) = node_with_uplink(&lab)?;
    n1.ip(&["addr", "add", "203.0.113.9/32", "dev", &eth])?;
    n1.block_on(|| async {
        let k = Kernel::new()?;
        let idx = k.link_by_name(&eth).await?.context("eth")?.index;
        // A deprecated IPv6 VIP is not a subnet of the node.
        let vip = AddressOptions {
            valid_lifetime: 300,
            no_dad: true,
            deprecated: true,
            ..Default::default()
        };
        k.add_address(idx, ip("2001:db8:9::1"), 64, &vip).await?;
        let addrs = k.link_addresses(idx).await?;
        assert!(
            addrs
                .iter()
                .any(|a| matches!(a.ip, IpAddr::V6(v) if v.segments()[0] == 0xfe80)),
            "the link has a link-local address to leave out: {addrs:?}"
        );
        let subnets: Vec<String> = k
            .link_subnets(idx)
            .await?
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            subnets,
            ["198.51.100.0/24", "203.0.113.9/32", "2001:db8:1::/64"]
        );
        Ok(())
    })
}

async fn next_matching(
    events: &mut EventStream,
    what: &str,
    mut pred: impl FnMut(&KernelEvent) -> bool,
) -> Result<KernelEvent> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for {what}"))?
            .ok_or_else(|| anyhow!("event stream ended waiting for {what}"))?;
        if pred(&ev) {
            return Ok(ev);
        }
    }
}

#[test]
fn events_for_addresses_links_and_routes() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let (n1, eth) = node_with_uplink(&lab)?;
    lab.add_fake_dummy(&n1, "kube-lb0")?;
    n1.block_on(|| async {
        let mut events = EventStream::open(EventGroups::all()).await?;
        let lb_idx = Kernel::new()?
            .link_by_name("kube-lb0")
            .await?
            .context("kube-lb0")?
            .index;

        n1.ip(&["addr", "add", "203.0.113.5/24", "dev", "kube-lb0"])?;
        let ev = next_matching(
            &mut events,
            "AddressAdded",
            |e| matches!(e, KernelEvent::AddressAdded(a) if a.ip == ip("203.0.113.5")),
        )
        .await?;
        let KernelEvent::AddressAdded(a) = ev else {
            unreachable!()
        };
        assert_eq!(a.ifindex, lb_idx);
        assert_eq!(a.ifname.as_deref(), Some("kube-lb0"));
        assert_eq!(a.prefix_len, 24);
        let ev = next_matching(&mut events, "connected route", |e| {
            matches!(e, KernelEvent::RouteAdded(r) if r.table == 254
                && r.destination.to_string() == "203.0.113.0/24")
        })
        .await?;
        let KernelEvent::RouteAdded(r) = ev else {
            unreachable!()
        };
        assert_eq!(r.ifindex, Some(lb_idx));
        assert!(r.unicast);

        n1.add_addr("kube-lb0", "2001:db8:ff::5/128")?;
        let ev = next_matching(
            &mut events,
            "IPv6 AddressAdded",
            |e| matches!(e, KernelEvent::AddressAdded(a) if a.ip == ip("2001:db8:ff::5")),
        )
        .await?;
        let KernelEvent::AddressAdded(a) = ev else {
            unreachable!()
        };
        assert_eq!(
            a.ifname.as_deref(),
            Some("kube-lb0"),
            "name from the link cache"
        );
        assert_eq!(a.prefix_len, 128);

        n1.ip(&["addr", "del", "203.0.113.5/24", "dev", "kube-lb0"])?;
        next_matching(&mut events, "AddressRemoved", |e| {
            matches!(e, KernelEvent::AddressRemoved(a) if a.ip == ip("203.0.113.5") && a.ifindex == lb_idx)
        })
        .await?;

        n1.ip(&["link", "set", &eth, "down"])?;
        next_matching(&mut events, "link down", |e| {
            matches!(e, KernelEvent::LinkChanged { name, up: false, admin_up: false, .. } if *name == eth)
        })
        .await?;
        n1.ip(&["link", "set", &eth, "up"])?;
        next_matching(
            &mut events,
            "link up",
            |e| matches!(e, KernelEvent::LinkChanged { name, up: true, .. } if *name == eth),
        )
        .await?;

        n1.ip(&["link", "add", "kube-lb9", "type", "ifb"])?;
        next_matching(
            &mut events,
            "new link",
            |e| matches!(e, KernelEvent::LinkChanged { name, up: false, .. } if name == "kube-lb9"),
        )
        .await?;
        n1.ip(&["link", "del", "kube-lb9"])?;
        next_matching(
            &mut events,
            "link removed",
            |e| matches!(e, KernelEvent::LinkRemoved { name, .. } if name == "kube-lb9"),
        )
        .await?;
        Ok(())
    })
}

async fn next_delta(w: &mut AddressFollower) -> Result<purelb_agent::kernel::AddressDelta> {
    tokio::time::timeout(T, w.next())
        .await
        .map_err(|_| anyhow!("timed out waiting for an address delta"))?
        .map_err(Into::into)
}

fn wa(ip_: &str, prefix_len: u8) -> FollowedAddress {
    FollowedAddress {
        ip: ip(ip_),
        prefix_len,
    }
}

#[test]
fn address_watcher_follows_matching_interfaces() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let lab = Lab::new()?;
    let (n1, eth) = node_with_uplink(&lab)?;
    lab.add_fake_dummy(&n1, "kube-lb0")?;
    n1.ip(&["addr", "add", "203.0.113.1/32", "dev", "kube-lb0"])?;
    n1.block_on(|| async {
        let mut w = AddressFollower::open(["kube-lb?"]).await?;
        // Initial dump: what is already there (link-locals left out).
        let d = next_delta(&mut w).await?;
        assert_eq!(d.added, [wa("203.0.113.1", 32)]);
        assert!(d.removed.is_empty());

        // Not a watched interface: nothing. Then a watched one.
        n1.ip(&["addr", "add", "198.51.100.99/24", "dev", &eth])?;
        let t0 = Instant::now();
        let k = Kernel::new()?;
        let lb = k.link_by_name("kube-lb0").await?.context("kube-lb0")?;
        k.add_address(lb.index, ip("203.0.113.10"), 24, &AddressOptions::default())
            .await?;
        let d = next_delta(&mut w).await?;
        let latency = t0.elapsed();
        assert_eq!(d.added, [wa("203.0.113.10", 24)], "{d:?}");
        assert!(d.removed.is_empty());
        eprintln!("address on kube-lb0 -> delta in {latency:?}");
        assert_eq!(d.added[0].network().to_string(), "203.0.113.0/24");

        // A burst arrives as one delta.
        for i in 20..30 {
            n1.ip(&[
                "addr",
                "add",
                &format!("203.0.113.{i}/32"),
                "dev",
                "kube-lb0",
            ])?;
        }
        let mut added = Vec::new();
        while added.len() < 10 {
            added.extend(next_delta(&mut w).await?.added);
        }
        assert_eq!(added.len(), 10, "{added:?}");

        assert_eq!(k.remove_address(ip("203.0.113.10")).await?, 1);
        let d = next_delta(&mut w).await?;
        assert_eq!(d.removed, [wa("203.0.113.10", 24)], "{d:?}");
        assert!(d.added.is_empty());

        // A matching link that appears later, and its removal.
        n1.ip(&["link", "add", "kube-lb1", "type", "ifb"])?;
        n1.add_addr("kube-lb1", "2001:db8:ff::1/128")?;
        let d = next_delta(&mut w).await?;
        assert_eq!(d.added, [wa("2001:db8:ff::1", 128)], "{d:?}");
        // The same address on a second matching link is not a change;
        // removing one copy is not either.
        n1.ip(&["addr", "add", "203.0.113.1/32", "dev", "kube-lb1"])?;
        n1.ip(&["addr", "del", "203.0.113.1/32", "dev", "kube-lb0"])?;
        // Renamed out of the patterns: its addresses leave the set.
        n1.ip(&["link", "set", "kube-lb1", "name", "other1"])?;
        let d = next_delta(&mut w).await?;
        let mut removed = d.removed.clone();
        removed.sort();
        assert_eq!(
            removed,
            [wa("203.0.113.1", 32), wa("2001:db8:ff::1", 128)],
            "{d:?}"
        );
        assert!(d.added.is_empty(), "{d:?}");
        // Renamed back in.
        n1.ip(&["link", "set", "other1", "name", "kube-lb1"])?;
        let d = next_delta(&mut w).await?;
        assert_eq!(d.added.len(), 2, "{d:?}");
        n1.ip(&["link", "del", "kube-lb1"])?;
        let d = next_delta(&mut w).await?;
        assert_eq!(d.removed.len(), 2, "{d:?}");

        let current: Vec<_> = w.current().iter().copied().collect();
        assert_eq!(current.len(), 10, "{current:?}");
        assert!(current.iter().all(|a| a.prefix_len == 32));
        Ok(())
    })
}
