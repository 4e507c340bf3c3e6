//! Hand-made filesystem trees for tests.

use std::path::PathBuf;

use crate::fs::DirFs;

pub struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    pub fn file(&self, p: &str, bytes: &[u8]) {
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn text(&self, p: &str, s: &str) {
        self.file(p, s.as_bytes());
    }

    pub fn dir(&self, p: &str) {
        std::fs::create_dir_all(self.path(p)).unwrap();
    }

    pub fn link(&self, p: &str, target: &str) {
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
    }

    pub fn fs(&self) -> DirFs {
        DirFs::new(self.dir.path())
    }
}
