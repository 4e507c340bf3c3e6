//! Guest uids: every guest's VMM runs under a uid of its own, allocated
//! from a fixed range and recorded on the data partition, so a guest keeps
//! its uid across restarts and reboots and no two guests ever share one.
//!
//! The table is a text file, one `UID NAME` line per guest after a
//! `next UID` line that says where the next search starts: a released uid
//! is handed out again only after the rest of the range.

use std::collections::BTreeMap;
use std::path::PathBuf;

use keel_sys::fsutil::atomic_write;

/// First uid of the range guests run under.
pub const BASE: u32 = 100_000;
/// How many uids the range holds.
pub const SPAN: u32 = 60_000;

/// The allocations, as loaded from and saved to `file`.
#[derive(Debug)]
pub struct UidTable {
    file: PathBuf,
    by_name: BTreeMap<String, u32>,
    next: u32,
}

impl UidTable {
    /// Loads `file`; a missing file is an empty table. A line that does not
    /// parse, a uid outside the range or one already taken is skipped with a
    /// warning naming the line.
    pub fn load(file: PathBuf) -> Self {
        let mut table = UidTable {
            file,
            by_name: BTreeMap::new(),
            next: BASE,
        };
        let text = match std::fs::read_to_string(&table.file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return table,
            Err(e) => {
                log::error!("cannot read {}: {e}", table.file.display());
                return table;
            }
        };
        for (i, line) in text.lines().enumerate() {
            if let Err(problem) = table.take_line(line) {
                log::warn!(
                    "{}:{}: {problem}; the line is skipped",
                    table.file.display(),
                    i + 1
                );
            }
        }
        table
    }

    fn take_line(&mut self, line: &str) -> Result<(), String> {
        let mut fields = line.split_whitespace();
        let (first, second) = match (fields.next(), fields.next(), fields.next()) {
            (Some(first), Some(second), None) => (first, second),
            _ => return Err("not `UID NAME`".to_string()),
        };
        let (uid, name) = if first == "next" {
            (second, None)
        } else {
            (first, Some(second))
        };
        let uid: u32 = uid.parse().map_err(|_| format!("`{uid}` is not a uid"))?;
        if !in_range(uid) {
            return Err(format!("uid {uid} is outside the guest range"));
        }
        match name {
            None => self.next = uid,
            Some(name) => {
                if let Some(owner) = self.owner(uid) {
                    return Err(format!("uid {uid} is already {owner}'s"));
                }
                self.by_name.insert(name.to_string(), uid);
            }
        }
        Ok(())
    }

    /// The uid recorded for `name`, if any.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The uid of `name`, allocated and recorded first if it has none. The
    /// table on disk is written before the uid is handed out.
    pub fn get_or_allocate(&mut self, name: &str) -> Result<u32, String> {
        if let Some(uid) = self.get(name) {
            return Ok(uid);
        }
        let start = self.next.saturating_sub(BASE) % SPAN;
        let uid = (0..SPAN)
            .map(|offset| BASE + (start + offset) % SPAN)
            .find(|&uid| self.owner(uid).is_none())
            .ok_or_else(|| format!("All {SPAN} guest uids are taken."))?;
        let mut by_name = self.by_name.clone();
        by_name.insert(name.to_string(), uid);
        let next = BASE + (uid - BASE + 1) % SPAN;
        self.save(&by_name, next)?;
        self.by_name = by_name;
        self.next = next;
        Ok(uid)
    }

    /// Forgets `name`'s uid (its guest is undefined).
    pub fn release(&mut self, name: &str) -> Result<(), String> {
        if !self.by_name.contains_key(name) {
            return Ok(());
        }
        let mut by_name = self.by_name.clone();
        by_name.remove(name);
        self.save(&by_name, self.next)?;
        self.by_name = by_name;
        Ok(())
    }

    fn owner(&self, uid: u32) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, &u)| u == uid)
            .map(|(name, _)| name.as_str())
    }

    fn save(&self, by_name: &BTreeMap<String, u32>, next: u32) -> Result<(), String> {
        let mut text = format!("next {next}\n");
        for (name, uid) in by_name {
            text.push_str(&format!("{uid} {name}\n"));
        }
        if let Some(parent) = self.file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("Cannot create {}: {e}.", parent.display()))?;
        }
        atomic_write(&self.file, text.as_bytes(), 0o600)
            .map_err(|e| format!("Cannot store {}: {e}.", self.file.display()))
    }
}

fn in_range(uid: u32) -> bool {
    (BASE..BASE + SPAN).contains(&uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dir: &tempfile::TempDir) -> UidTable {
        UidTable::load(dir.path().join("guests/uids"))
    }

    #[test]
    fn names_that_collided_under_the_old_hash_get_distinct_uids() {
        // FNV-1a mod 60000 gave both 114791.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut uids = table(&dir);
        let a = uids.get_or_allocate("app1").expect("app1");
        let b = uids.get_or_allocate("app180").expect("app180");
        assert_ne!(a, b);
        assert!(in_range(a) && in_range(b));
        assert_eq!(uids.get_or_allocate("app1").expect("again"), a);
    }

    #[test]
    fn allocations_survive_a_reload_and_released_uids_are_not_reused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut uids = table(&dir);
        let web1 = uids.get_or_allocate("web1").expect("web1");
        let web2 = uids.get_or_allocate("web2").expect("web2");

        let mut again = table(&dir);
        assert_eq!(again.get("web1"), Some(web1));
        assert_eq!(again.get_or_allocate("web2").expect("web2"), web2);
        again.release("web1").expect("release");
        let web3 = again.get_or_allocate("web3").expect("web3");
        assert!(![web1, web2].contains(&web3), "{web3} was handed out again");

        let reloaded = table(&dir);
        assert_eq!(reloaded.get("web1"), None);
        assert_eq!(reloaded.get("web3"), Some(web3));
    }

    #[test]
    fn a_corrupt_table_never_yields_a_shared_uid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("guests/uids");
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        let text = format!("next {BASE}\n{BASE} a\n{BASE} b\n7 c\ngarbage\n");
        std::fs::write(&file, text).expect("write");
        let mut uids = UidTable::load(file);
        assert_eq!(uids.get("a"), Some(BASE));
        assert_eq!((uids.get("b"), uids.get("c")), (None, None));
        assert_ne!(uids.get_or_allocate("b").expect("b"), BASE);
    }
}
