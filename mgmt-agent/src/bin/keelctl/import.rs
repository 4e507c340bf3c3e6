//! `keelctl import xen FILE`: the I/O around keel_mgmt's import: read the
//! config, print the spec (stdout) and the report (stderr), and with
//! `--define` or `--upload` send the files and the spec to the host.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use keel_mgmt::client::import_xen::{self, Import, Options};
use keel_mgmt::client::{exit, ClientError, ConfigDir, ConnectOptions};
use keel_mgmt::{Request, Response};

use crate::transfer::{send, Local};

/// The options of `keelctl import xen`.
#[derive(clap::Args, Debug)]
pub struct XenArgs {
    /// The Xen domain config (xl.cfg or xm).
    pub file: PathBuf,
    /// Define the guest on the host (needs a key with the operator or
    /// admin role).
    #[arg(long)]
    pub define: bool,
    /// Upload the disks (and a kernel and ramdisk in dom0) the config
    /// names, then define the guest.
    #[arg(long)]
    pub upload: bool,
    /// Name the guest this instead of the domain's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Give the guest a cloud-init seed, with the domain's UUID as its
    /// instance id.
    #[arg(long)]
    pub cloud_init: bool,
}

/// Runs the import; returns keelctl's exit status.
pub fn xen(host: Option<&str>, json: bool, args: &XenArgs) -> Result<i32, ClientError> {
    let shown = args.file.display().to_string();
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("keelctl: Cannot read {shown}: {e}");
            return Ok(exit::IMPORT_FAILED);
        }
    };
    let options = Options {
        name: args.name.clone(),
        cloud_init: args.cloud_init,
    };
    let import = match import_xen::import(&shown, &text, &options) {
        Ok(import) => import,
        Err(failed) => {
            eprintln!("keelctl: {failed}");
            return Ok(exit::IMPORT_FAILED);
        }
    };
    print!("{}", import.spec_toml);
    let _ = std::io::stdout().flush();
    for line in import.report_lines(&shown) {
        eprintln!("{line}");
    }
    eprintln!("{}", import.summary(&shown));
    if args.upload {
        upload_and_define(host, json, &import)?;
    } else {
        for file in &import.files {
            eprintln!(
                "keelctl: the guest needs {} as {} on the host (--upload copies it)",
                file.source.display(),
                file.remote
            );
        }
        if args.define {
            define(&mut connect(host)?, &import)?;
        }
    }
    Ok(import.exit_code())
}

fn connect(host: Option<&str>) -> Result<keel_mgmt::client::Client, ClientError> {
    crate::connect(&ConfigDir::from_env()?, host, &ConnectOptions::default())
}

/// Opens every file first, so that a missing one fails before anything
/// is sent; then uploads them one by one and defines the guest.
fn upload_and_define(host: Option<&str>, json: bool, import: &Import) -> Result<(), ClientError> {
    let locals = import
        .files
        .iter()
        .map(|f| Local::open(&f.source).map(|l| (l, f.remote.as_str())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut c = connect(host)?;
    let bars = !json && std::io::stderr().is_terminal();
    for (local, remote) in &locals {
        let sent = send(&mut c, local, remote, false, bars.then_some(*remote))?;
        eprintln!(
            "keelctl: uploaded {} to {remote} ({} bytes, {} of them data, in {:.1} s)",
            local.path.display(),
            sent.done.size,
            sent.done.data,
            sent.seconds
        );
    }
    define(&mut c, import)
}

fn define(c: &mut keel_mgmt::client::Client, import: &Import) -> Result<(), ClientError> {
    let request = Request::GuestDefine {
        spec_toml: import.spec_toml.clone(),
    };
    match c.call(request)? {
        Response::Ok => {
            eprintln!("keelctl: defined guest {}", import.spec.name);
            Ok(())
        }
        _ => Err(ClientError::Unexpected),
    }
}
