//! keel-init entry point.

fn main() {
    // Refuse to run as anything but PID 1: on a developer's machine this
    // binary would otherwise unmount filesystems and reboot it.
    if std::process::id() != 1 {
        eprintln!("keel-init: error: this is the appliance's PID 1 and must not run as an ordinary process");
        std::process::exit(2);
    }
    keel_init::run()
}
