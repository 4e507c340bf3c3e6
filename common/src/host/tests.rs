use super::*;

fn parse(text: &str) -> Result<HostConfig, ConfigError> {
    HostConfig::parse(Path::new("host.toml"), text)
}

#[test]
fn empty_file_gives_defaults() {
    let config = parse("").expect("empty config is valid");
    assert_eq!(config.hostname(), "keel");
    assert_eq!(config.agent.listen.port(), 7444);
}

#[test]
fn hostname_and_listen_are_read() {
    let config =
        parse("hostname = \"hv01\"\n[agent]\nlisten = \"127.0.0.1:9000\"\n").expect("valid");
    assert_eq!(config.hostname(), "hv01");
    assert_eq!(config.agent.listen.to_string(), "127.0.0.1:9000");
}

#[test]
fn bad_hostname_names_file_line_and_field() {
    let err = parse("# comment\nhostname = \"bad_name\"\n").expect_err("invalid hostname");
    let text = err.to_string();
    assert!(text.starts_with("host.toml:2: field `hostname`:"), "{text}");
    assert!(text.contains("'_'"), "{text}");
}

#[test]
fn wrong_type_names_the_nested_field() {
    let err = parse("hostname = \"a\"\n[agent]\nlisten = 7444\n").expect_err("wrong type");
    let text = err.to_string();
    assert!(
        text.starts_with("host.toml:3: field `agent.listen`:"),
        "{text}"
    );
}

#[test]
fn unknown_field_is_refused() {
    let err = parse("hostnme = \"hv01\"\n").expect_err("typo");
    let text = err.to_string();
    assert!(text.contains("host.toml:1:"), "{text}");
    assert!(text.contains("hostnme"), "{text}");
}

#[test]
fn syntax_error_has_a_line() {
    let err = parse("hostname = \"hv01\"\n[agent\n").expect_err("syntax");
    assert!(err.to_string().starts_with("host.toml:2:"), "{err}");
}

#[test]
fn no_network_table_means_dhcp_on_the_first_nic_under_br0() {
    let config = parse("").expect("valid");
    let networks = config.networks();
    assert_eq!(networks.len(), 1);
    assert_eq!(networks[0].uplink(), Uplink::FirstEthernet);
    assert_eq!(networks[0].mode(), AddressMode::Dhcp);
    assert_eq!(networks[0].bridge(), Some("br0"));
    assert_eq!(config.guest_bridge().as_deref(), Some("br0"));
}

#[test]
fn networks_by_name_and_by_mac() {
    let config = parse(
        "[[network]]\ninterface = \"eno1\"\nbridge = \"br0\"\n\n\
         [[network]]\nmatch = { mac = \"52:54:00:AA:bb:01\" }\nmode = \"static\"\n\
         address = \"192.168.7.10/24\"\ngateway = \"192.168.7.1\"\n",
    )
    .expect("valid");
    let networks = config.networks();
    assert_eq!(networks.len(), 2);
    assert_eq!(networks[0].uplink(), Uplink::Name("eno1".into()));
    assert_eq!(networks[0].mode(), AddressMode::Dhcp);
    assert_eq!(
        networks[1].uplink(),
        Uplink::Mac(MacAddr([0x52, 0x54, 0, 0xaa, 0xbb, 1]))
    );
    assert_eq!(networks[1].mode(), AddressMode::Static);
    let address = networks[1].address.unwrap();
    assert_eq!(address.to_string(), "192.168.7.10/24");
    assert_eq!(networks[1].gateway, Some(Ipv4Addr::new(192, 168, 7, 1)));
    assert_eq!(networks[1].bridge(), None);
    assert_eq!(config.guest_bridge().as_deref(), Some("br0"));
}

#[test]
fn guest_consoles_stay_off_the_host_console_unless_asked() {
    assert!(!parse("").expect("valid").console.guests);
    assert!(
        parse("[console]\nguests = true\n")
            .expect("valid")
            .console
            .guests
    );
    let err = parse("[console]\nguests = \"yes\"\n").expect_err("not a bool");
    assert!(
        err.to_string()
            .starts_with("host.toml:2: field `console.guests`:"),
        "{err}"
    );
}

#[test]
fn a_network_without_bridge_gives_guests_none() {
    let config = parse("[[network]]\ninterface = \"eth0\"\n").expect("valid");
    assert_eq!(config.guest_bridge(), None);
}

fn refused(text: &str, line: usize, field: &str, words: &str) {
    let err = parse(text).expect_err("must be refused").to_string();
    let prefix = format!("host.toml:{line}: field `{field}`:");
    assert!(err.starts_with(&prefix), "{err}\n(wanted {prefix})");
    assert!(err.contains(words), "{err}\n(wanted {words:?})");
}

#[test]
fn bad_network_tables_name_line_and_field() {
    refused(
        "[[network]]\ninterface = \"eth0\"\nmatch = { mac = \"52:54:00:00:00:01\" }\n",
        3,
        "network[0].match.mac",
        "not both",
    );
    refused(
        "[[network]]\nmatch = { mac = \"52:54:00:00:00\" }\n",
        2,
        "network[0].match.mac",
        "not a MAC address",
    );
    refused(
        "[[network]]\nmatch = { mac = \"01:00:5e:00:00:01\" }\n",
        2,
        "network[0].match.mac",
        "unicast",
    );
    refused(
        "[[network]]\ninterface = \"a/b\"\n",
        2,
        "network[0].interface",
        "'/'",
    );
    refused(
        "[[network]]\nmode = \"static\"\n",
        2,
        "network[0].address",
        "required",
    );
    refused(
        "[[network]]\nmode = \"dhcp\"\naddress = \"10.0.0.2/24\"\n",
        3,
        "network[0].address",
        "only allowed when mode is \"static\"",
    );
    refused(
        "[[network]]\nmode = \"static\"\naddress = \"10.0.0.2/33\"\n",
        3,
        "network[0].address",
        "/33",
    );
    refused(
        "[[network]]\nmode = \"static\"\naddress = \"10.0.0.2\"\n",
        3,
        "network[0].address",
        "prefix length",
    );
    refused(
        "[[network]]\nmode = \"static\"\naddress = \"10.0.0.2/24\"\ngateway = \"10.0.1.1\"\n",
        4,
        "network[0].gateway",
        "subnet",
    );
    refused(
        "[[network]]\nmode = \"manual\"\n",
        2,
        "network[0].mode",
        "dhcp",
    );
    refused(
        "[[network]]\ninterface = \"eth0\"\nbridge = \"eth0\"\n",
        3,
        "network[0].bridge",
        "uplink itself",
    );
    refused(
        "[[network]]\ninterface = \"eth0\"\nbridge = \"br0\"\n\
         [[network]]\ninterface = \"eth1\"\nbridge = \"br1\"\n",
        6,
        "network[1].bridge",
        "only one uplink",
    );
    refused(
        "[[network]]\ninterface = \"eth0\"\n[[network]]\ninterface = \"eth0\"\n",
        3,
        "network[1]",
        "already configured by network[0]",
    );
    refused(
        "[[network]]\ninterface = \"eth0\"\nbrige = \"br0\"\n",
        3,
        "network[0].brige",
        "brige",
    );
}

#[test]
fn the_port_is_named_only_when_it_is_not_the_default() {
    let ip = std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15));
    assert_eq!(agent_host(ip, DEFAULT_AGENT_PORT), "10.0.2.15");
    assert_eq!(agent_host(ip, 9000), "10.0.2.15:9000");
    assert_eq!(
        pairing_hint("10.0.2.15", "1234-5678"),
        "unpaired: on your workstation run `keelctl keygen && keelctl pair 10.0.2.15 1234-5678`"
    );
}

#[test]
fn cidr_contains() {
    let cidr: Ipv4Cidr = "192.168.7.10/24".parse().unwrap();
    assert!(cidr.contains(Ipv4Addr::new(192, 168, 7, 1)));
    assert!(!cidr.contains(Ipv4Addr::new(192, 168, 8, 1)));
    let all: Ipv4Cidr = "10.1.2.3/32".parse().unwrap();
    assert!(!all.contains(Ipv4Addr::new(10, 1, 2, 4)));
    assert!("10.1.2.3/0".parse::<Ipv4Cidr>().is_err());
}

#[test]
fn hostname_rules() {
    assert!(validate_hostname("hv01.example.com").is_ok());
    assert!(validate_hostname("").is_err());
    assert!(validate_hostname("-a").is_err());
    assert!(validate_hostname("a..b").is_err());
    assert!(validate_hostname(&"a".repeat(64)).is_err());
    assert!(validate_hostname("a b").is_err());
}

#[test]
fn guest_devices_are_named_by_stable_identity_only() {
    let config = parse(
        "[storage]\nguest_devices = [\"/dev/disk/by-id/ata-XYZ\", \"/dev/disk/by-partuuid/0a1b\"]\n",
    )
    .expect("stable names");
    assert_eq!(config.storage.guest_devices.len(), 2);
    assert!(parse("").expect("empty").storage.guest_devices.is_empty());
    for bad in [
        "/dev/sda",
        "/dev/disk/by-id",
        "/dev/disk/by-id/..",
        "/dev/disk/by-id/a/b",
        "dev/disk/by-id/ata-XYZ",
        "/var/lib/keel/agent/host_key",
    ] {
        let text =
            format!("[storage]\nguest_devices = [\n  \"/dev/disk/by-id/ok\",\n  \"{bad}\",\n]\n");
        let message = parse(&text).expect_err(bad).to_string();
        assert!(
            message.starts_with("host.toml:4: field `storage.guest_devices[1]`: "),
            "{bad}: {message}"
        );
    }
}
