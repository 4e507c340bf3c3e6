//! The appliance as an operator meets it: boot keel.img with a NIC on
//! QEMU's user network, read the pairing code from the serial console,
//! and pair and talk to the agent through the forwarded port with the
//! same client library keelctl uses. The operator has edited host.toml on
//! the stick first: a static address on the NIC chosen by its MAC, no
//! bridge (appliance.rs covers the default: DHCP on br0).

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::time::Duration;

use keel_mgmt::client::{Client, ConnectOptions, Target};
use keel_mgmt::{ClientKey, KnownHosts, Request, Response};
use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

#[test]
fn the_agent_in_the_appliance_pairs_and_answers_over_the_network() {
    let port = free_port();
    let mut options = QemuOptions::new(artefact("keel.img"), BootMedia::UsbStick);
    options.agent_port = Some(port);
    options.nic_mac = Some("52:54:00:6b:65:01".into());
    // QEMU's user network forwards the agent port to 10.0.2.15, its first
    // DHCP address; a static host takes that one.
    options.esp_files.push((
        "keel/host.toml".into(),
        "hostname = \"hv-static\"\n\n[[network]]\nmatch = { mac = \"52:54:00:6B:65:01\" }\n\
         mode = \"static\"\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\n"
            .into(),
    ));
    let mut qemu = Qemu::start("agent", &options);
    let address_line = qemu.wait_for("management address: ", Duration::from_secs(420));
    assert!(
        address_line.contains("management address: 10.0.2.15/24 on eth0, agent port 7444"),
        "{address_line}"
    );
    let serial = qemu.serial();
    assert!(
        serial.contains("eth0: static 10.0.2.15/24, gateway 10.0.2.2"),
        "{serial}"
    );
    assert!(
        !serial.contains("DHCP lease"),
        "a static host asks no DHCP server:\n{serial}"
    );
    assert!(
        !serial.contains("br0"),
        "no bridge was asked for:\n{serial}"
    );
    let line = qemu.wait_for("pairing code: ", Duration::from_secs(120));
    let code = line
        .split("pairing code: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no code in {line:?}"))
        .trim()
        .to_string();

    let key = ClientKey::generate().expect("client key");
    let mut known_hosts = KnownHosts::default();
    let target = Target {
        known_hosts_name: format!("127.0.0.1:{port}"),
        host: "127.0.0.1".into(),
        port,
    };
    let pairing = ConnectOptions {
        trust_on_first_use: true,
        pairing_code: Some(code),
        timeout: Some(Duration::from_secs(60)),
    };
    let mut client = Client::connect(&target, &key, &mut known_hosts, &pairing)
        .expect("pair with the appliance");
    match client.call(Request::HostInfo).expect("host info") {
        Response::HostInfo(info) => {
            // host.toml from the stick is the configuration in force.
            assert_eq!(info.hostname, "hv-static");
            assert_eq!(info.version, keel_common::VERSION);
        }
        other => panic!("unexpected answer {other:?}"),
    }
    drop(client);

    // Paired: the same key now connects without a code, and the host key
    // pinned at pairing is checked.
    let plain = ConnectOptions {
        trust_on_first_use: false,
        pairing_code: None,
        timeout: Some(Duration::from_secs(60)),
    };
    let mut client =
        Client::connect(&target, &key, &mut known_hosts, &plain).expect("reconnect as admin");
    assert!(matches!(
        client.call(Request::GuestList).expect("guest list"),
        Response::Guests(_)
    ));
    drop(client);

    qemu.monitor("system_powerdown");
    qemu.wait_for("keel: powering off now", Duration::from_secs(90));
    let status = qemu
        .wait_exit(Duration::from_secs(90))
        .expect("QEMU exits after power-off");
    assert!(status.success(), "QEMU exited with {status}");
}
