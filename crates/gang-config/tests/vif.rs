//! `vif = [...]` specifications (xl-network-configuration(5)).

use gang_config::{Config, DomainConfig, VifKind, VifSpec};

#[test]
fn empty_and_blank_specs_are_all_defaults() {
    for spec in ["", " ", " , ,"] {
        assert_eq!(
            VifSpec::parse(spec).unwrap(),
            VifSpec::default(),
            "{spec:?}"
        );
    }
}

#[test]
fn every_key() {
    let v = VifSpec::parse(
        "mac=00:16:3E:74:3d:76, model=e1000,bridge=xenbr0,vifname=web0,ip=10.0.0.2 10.0.0.3,\
         type=ioemu,script=vif-route,rate=10Mb/s@20ms,backend=net-dom,gatewaydev=eth0,mtu=9000",
    )
    .unwrap();
    assert_eq!(
        v,
        VifSpec {
            mac: Some("00:16:3E:74:3d:76".to_owned()),
            model: Some("e1000".to_owned()),
            bridge: Some("xenbr0".to_owned()),
            vifname: Some("web0".to_owned()),
            ip: Some("10.0.0.2 10.0.0.3".to_owned()),
            kind: Some(VifKind::Ioemu),
            script: Some("vif-route".to_owned()),
            rate: Some("10Mb/s@20ms".to_owned()),
            backend: Some("net-dom".to_owned()),
            other: vec![
                ("gatewaydev".to_owned(), "eth0".to_owned()),
                ("mtu".to_owned(), "9000".to_owned())
            ],
        }
    );
    assert_eq!(VifSpec::parse("type=vif").unwrap().kind, Some(VifKind::Vif));
}

#[test]
fn last_assignment_wins() {
    let v = VifSpec::parse("bridge=a,mtu=1,bridge=b,mtu=2").unwrap();
    assert_eq!(v.bridge.as_deref(), Some("b"));
    assert_eq!(v.other, [("mtu".to_owned(), "2".to_owned())]);
}

#[test]
fn malformed_specs() {
    let cases = [
        ("bridge", "parameter without a value (want KEY=VALUE): near `bridge' in `bridge'"),
        ("mac=00:16:3e:00:00:01,xenbr0", "parameter without a value (want KEY=VALUE): near `xenbr0' in `mac=00:16:3e:00:00:01,xenbr0'"),
        ("=x", "parameter without a key: near `=x' in `=x'"),
        ("mac=00:16:3e:00:00", "invalid mac address (want six pairs of hex digits, aa:bb:cc:dd:ee:ff): near `mac=00:16:3e:00:00' in `mac=00:16:3e:00:00'"),
        ("mac=00:16:3e:00:00:zz", "invalid mac address (want six pairs of hex digits, aa:bb:cc:dd:ee:ff): near `mac=00:16:3e:00:00:zz' in `mac=00:16:3e:00:00:zz'"),
        ("mac=", "invalid mac address (want six pairs of hex digits, aa:bb:cc:dd:ee:ff): near `mac=' in `mac='"),
        ("mac=01:00:5e:00:00:01", "a multicast mac address (first byte odd) cannot be an interface's: near `mac=01:00:5e:00:00:01' in `mac=01:00:5e:00:00:01'"),
        ("type=pv", "unknown value for type (ioemu or vif): near `type=pv' in `type=pv'"),
    ];
    for (spec, want) in cases {
        let e = VifSpec::parse(spec).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("config parsing error in vif specification: {want}"),
            "{spec}"
        );
    }
}

#[test]
fn domain_vifs_parsed_in_order_and_errors_located() {
    let cfg = Config::parse(
        "vm.cfg",
        "name='a'\nvif=['', 'bridge=br0,mac=00:16:3e:00:00:01', 'model=e1000']",
    )
    .unwrap();
    let d = DomainConfig::from_config(&cfg).unwrap();
    assert_eq!(d.vifs.len(), 3);
    assert_eq!(d.vif_specs.len(), 3);
    assert_eq!(d.vif_specs[0], VifSpec::default());
    assert_eq!(d.vif_specs[1].bridge.as_deref(), Some("br0"));
    assert_eq!(d.vif_specs[2].model.as_deref(), Some("e1000"));

    let cfg = Config::parse("vm.cfg", "name='a'\n\nvif=['', 'mac=1:2:3']").unwrap();
    assert_eq!(
        DomainConfig::from_config(&cfg).unwrap_err().to_string(),
        "vm.cfg:3: invalid value for parameter `vif': config parsing error in vif \
         specification: invalid mac address (want six pairs of hex digits, aa:bb:cc:dd:ee:ff): \
         near `mac=1:2:3' in `mac=1:2:3'"
    );
}
