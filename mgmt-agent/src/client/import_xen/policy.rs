//! `on_poweroff`, `on_reboot` and `on_crash` to a Keel restart policy.
//!
//! Each Xen action either brings the guest back or leaves it down; Keel's
//! policies each do one of those per ending ([`RestartPolicy::restarts_after`]).
//! The closest policy is the one that differs on the fewest endings,
//! where a power-off or reboot counts twice as much as a crash: a guest
//! that will not come back after a reboot, or keeps coming back after it
//! powered itself off, surprises more than one restarted after a crash.
//! Endings the config leaves out count with xl's defaults (destroy,
//! restart, destroy) but are not reported.

use keel_common::guest::{GuestEnd, RestartPolicy};

/// What Xen does when a guest ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Destroy,
    Restart,
    RenameRestart,
    Preserve,
    CoredumpDestroy,
    CoredumpRestart,
    SoftReset,
}

impl Action {
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "destroy" => Action::Destroy,
            "restart" => Action::Restart,
            "rename-restart" => Action::RenameRestart,
            "preserve" => Action::Preserve,
            "coredump-destroy" => Action::CoredumpDestroy,
            "coredump-restart" => Action::CoredumpRestart,
            "soft-reset" => Action::SoftReset,
            _ => return None,
        })
    }

    /// Whether the guest runs again after it.
    fn restarts(self) -> bool {
        matches!(
            self,
            Action::Restart | Action::RenameRestart | Action::CoredumpRestart | Action::SoftReset
        )
    }

    /// What Keel cannot do of an action that it otherwise follows.
    fn loss(self) -> Option<&'static str> {
        match self {
            Action::Destroy | Action::Restart => None,
            Action::RenameRestart => Some("Keel keeps no renamed copy of the guest that ended"),
            Action::Preserve => Some("Keel keeps nothing of a stopped guest to examine"),
            Action::CoredumpDestroy | Action::CoredumpRestart => Some("Keel writes no core dump"),
            Action::SoftReset => Some("Keel has no soft reset; the guest starts afresh"),
        }
    }
}

/// The config's actions, one for each ending; `None` where it sets none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions {
    pub poweroff: Option<Action>,
    pub reboot: Option<Action>,
    pub crash: Option<Action>,
}

impl Actions {
    /// The config's action for `end`, and the one xl uses when unset.
    fn get(&self, end: GuestEnd) -> (Option<Action>, Action) {
        match end {
            GuestEnd::PowerOff => (self.poweroff, Action::Destroy),
            GuestEnd::Reboot => (self.reboot, Action::Restart),
            GuestEnd::Failure => (self.crash, Action::Destroy),
        }
    }
}

/// The key of each ending.
pub fn key(end: GuestEnd) -> &'static str {
    match end {
        GuestEnd::PowerOff => "on_poweroff",
        GuestEnd::Reboot => "on_reboot",
        GuestEnd::Failure => "on_crash",
    }
}

fn weight(end: GuestEnd) -> u32 {
    match end {
        GuestEnd::PowerOff | GuestEnd::Reboot => 2,
        GuestEnd::Failure => 1,
    }
}

/// The closest policy, and for each ending the config sets that Keel
/// does not reproduce, why.
pub fn choose(actions: &Actions) -> (RestartPolicy, Vec<(GuestEnd, String)>) {
    let cost = |policy: RestartPolicy| -> u32 {
        GuestEnd::ALL
            .into_iter()
            .filter(|&end| {
                let (given, default) = actions.get(end);
                given.unwrap_or(default).restarts() != policy.restarts_after(end)
            })
            .map(weight)
            .sum()
    };
    // Ties go to Keel's default, then in the enum's order.
    let candidates = [
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
        RestartPolicy::Never,
    ];
    let policy = candidates
        .into_iter()
        .min_by_key(|p| cost(*p))
        .unwrap_or_default();
    let mut lost = Vec::new();
    for end in GuestEnd::ALL {
        let (Some(action), _) = actions.get(end) else {
            continue;
        };
        let restarts = policy.restarts_after(end);
        let why = if action.restarts() != restarts {
            let does = if restarts {
                "starts it again"
            } else {
                "leaves it stopped"
            };
            let ending = match end {
                GuestEnd::PowerOff => "powers itself off",
                GuestEnd::Reboot => "reboots",
                GuestEnd::Failure => "crashes",
            };
            format!("under restart = \"{policy}\", when the guest {ending} Keel {does}")
        } else if let Some(loss) = action.loss() {
            let then = if restarts {
                "it starts the guest again"
            } else {
                "the guest stays stopped"
            };
            format!("{loss}; {then}")
        } else {
            continue;
        };
        lost.push((end, why));
    }
    (policy, lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    fn with(poweroff: Option<Action>, reboot: Option<Action>, crash: Option<Action>) -> Actions {
        Actions {
            poweroff,
            reboot,
            crash,
        }
    }

    #[test]
    fn every_action_name_parses() {
        for (name, action) in [
            ("destroy", Destroy),
            ("restart", Restart),
            ("rename-restart", RenameRestart),
            ("preserve", Preserve),
            ("coredump-destroy", CoredumpDestroy),
            ("coredump-restart", CoredumpRestart),
            ("soft-reset", SoftReset),
        ] {
            assert_eq!(Action::parse(name), Some(action));
        }
        assert_eq!(Action::parse("reboot"), None);
    }

    #[test]
    fn exact_matches_pick_their_policy_and_report_nothing() {
        let cases = [
            (
                with(Some(Restart), Some(Restart), Some(Restart)),
                RestartPolicy::Always,
            ),
            (
                with(Some(Destroy), Some(Restart), Some(Restart)),
                RestartPolicy::OnFailure,
            ),
            (
                with(Some(Destroy), Some(Destroy), Some(Destroy)),
                RestartPolicy::Never,
            ),
            // Left out, the crash is xl's destroy, but unreported.
            (with(None, Some(Restart), None), RestartPolicy::OnFailure),
            (with(None, None, None), RestartPolicy::OnFailure),
            (with(None, None, Some(Restart)), RestartPolicy::OnFailure),
        ];
        for (actions, policy) in cases {
            assert_eq!(choose(&actions), (policy, vec![]), "{actions:?}");
        }
    }

    #[test]
    fn the_closest_policy_is_chosen_and_each_difference_reported() {
        // xl's defaults, written out: a reboot restarts, so on-failure,
        // which also restarts after a crash.
        let (policy, lost) = choose(&with(Some(Destroy), Some(Restart), Some(Destroy)));
        assert_eq!(policy, RestartPolicy::OnFailure);
        assert_eq!(
            lost,
            [(
                GuestEnd::Failure,
                "under restart = \"on-failure\", when the guest crashes Keel starts it again"
                    .to_string()
            )]
        );
        // A restart on power-off outweighs a destroy on crash.
        let (policy, lost) = choose(&with(Some(Restart), Some(Restart), Some(Destroy)));
        assert_eq!(policy, RestartPolicy::Always);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, GuestEnd::Failure);
        // A reboot that ends the guest: never, though a crash restarts.
        let (policy, lost) = choose(&with(None, Some(Destroy), Some(Restart)));
        assert_eq!(policy, RestartPolicy::Never);
        assert_eq!(lost.len(), 1);
        assert!(
            lost[0].1.contains("crashes Keel leaves it stopped"),
            "{lost:?}"
        );
    }

    #[test]
    fn actions_keel_follows_only_in_part_are_reported() {
        let (policy, lost) = choose(&with(
            Some(Preserve),
            Some(RenameRestart),
            Some(CoredumpRestart),
        ));
        assert_eq!(policy, RestartPolicy::OnFailure);
        let lost: Vec<(GuestEnd, &str)> = lost.iter().map(|(e, t)| (*e, t.as_str())).collect();
        assert_eq!(
            lost,
            [
                (
                    GuestEnd::PowerOff,
                    "Keel keeps nothing of a stopped guest to examine; the guest stays stopped"
                ),
                (
                    GuestEnd::Reboot,
                    "Keel keeps no renamed copy of the guest that ended; it starts the guest again"
                ),
                (
                    GuestEnd::Failure,
                    "Keel writes no core dump; it starts the guest again"
                ),
            ]
        );
        let (policy, lost) = choose(&with(None, Some(SoftReset), Some(CoredumpDestroy)));
        assert_eq!(policy, RestartPolicy::OnFailure);
        assert!(lost[1]
            .1
            .starts_with("under restart = \"on-failure\", when the guest crashes"));
    }
}
