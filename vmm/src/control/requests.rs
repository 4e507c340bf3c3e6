//! Carrying out control requests against the VM.

use std::sync::Arc;

use keel_common::vmm_api::{write_frame, VmInfo, VmStats, VmmRequest, VmmResponse};

use super::peer::{Peer, Sent};

/// What the control socket can ask of a VM.
pub trait VmControl {
    fn info(&self) -> VmInfo;
    fn stats(&self) -> VmStats;
    /// Stops every vCPU, waiting until each has left KVM_RUN.
    fn pause(&self) -> Result<(), String>;
    fn resume(&self);
    /// Sends ctrl-alt-del; false when the guest's keyboard buffer is full.
    fn shutdown(&self) -> bool;
    /// Ends the VM at once.
    fn kill(&self);
    /// Sends console output to `peer` from now on.
    fn attach_console(&self, peer: Arc<Peer>);
    /// Stops sending console output to `peer`, if it was attached.
    fn detach_console(&self, peer: &Arc<Peer>);
    /// Feeds console input to the guest; returns how many bytes it took.
    fn console_input(&self, data: &[u8]) -> usize;
}

/// Carries out one request and answers on `peer`. False when the
/// connection must be dropped.
pub(super) fn serve(request: VmmRequest, vm: &impl VmControl, peer: &Arc<Peer>) -> bool {
    let attach = request == VmmRequest::ConsoleAttach;
    let Some(response) = respond(request, vm) else {
        return true;
    };
    let mut frame = Vec::new();
    if let Err(err) = write_frame(&mut frame, &response) {
        log::warn!("control socket: cannot encode an answer: {err}");
        return false;
    }
    match peer.send(&frame) {
        Ok(Sent::Accepted) => {
            // Attached after the answer, so that it comes first.
            if attach {
                vm.attach_console(peer.clone());
            }
            true
        }
        Ok(Sent::Dropped) => {
            log::warn!("control socket: dropping a client that does not read its answers");
            false
        }
        Err(_) => false,
    }
}

/// The answer to `request`; `None` when it needs none.
fn respond(request: VmmRequest, vm: &impl VmControl) -> Option<VmmResponse> {
    Some(match request {
        VmmRequest::Info => VmmResponse::Info(vm.info()),
        VmmRequest::Stats => VmmResponse::Stats(vm.stats()),
        VmmRequest::Pause => match vm.pause() {
            Ok(()) => VmmResponse::Ok,
            Err(err) => VmmResponse::Error(err),
        },
        VmmRequest::Resume => {
            vm.resume();
            VmmResponse::Ok
        }
        VmmRequest::Shutdown => {
            if vm.shutdown() {
                VmmResponse::Ok
            } else {
                VmmResponse::Error("the guest's keyboard buffer is full; try again".into())
            }
        }
        VmmRequest::Kill => {
            vm.kill();
            VmmResponse::Ok
        }
        VmmRequest::ConsoleAttach => VmmResponse::Ok,
        VmmRequest::ConsoleInput(data) => {
            let taken = vm.console_input(&data);
            if taken < data.len() {
                VmmResponse::Error(format!(
                    "the guest took {taken} of {} bytes; resend the rest",
                    data.len()
                ))
            } else {
                return None;
            }
        }
    })
}
