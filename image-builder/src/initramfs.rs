//! The initramfs: a newc cpio archive of the root filesystem, compressed
//! with zstd, with every entry's metadata fixed for reproducibility.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ImageError;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { source: PathBuf, executable: bool },
    Symlink(String),
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// The tree to pack, keyed by path without a leading slash (sorted, so the
/// archive order never depends on the file system).
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// The skeleton every Keel root has: mount points and `/dev/console`,
    /// which the kernel opens before init mounts devtmpfs.
    pub fn skeleton() -> Self {
        let mut tree = Tree::default();
        for dir in [
            "dev",
            "etc",
            "proc",
            "run",
            "sys",
            "tmp",
            "usr/bin",
            "var/lib/keel",
        ] {
            tree.add_dir(dir);
        }
        tree.insert(
            "dev/console",
            Node::CharDev {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        );
        tree
    }

    /// Adds a directory and its parents.
    pub fn add_dir(&mut self, path: &str) {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.nodes.entry(prefix.clone()).or_insert(Node::Dir);
        }
    }

    /// Adds `node` at `path`, creating parent directories.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.add_dir(parent);
        }
        self.nodes.insert(path.to_string(), node);
    }

    /// Adds every file, directory and symlink under `root`.
    pub fn add_host_tree(&mut self, root: &Path) -> Result<(), ImageError> {
        self.add_host_dir(root, root)
    }

    fn add_host_dir(&mut self, root: &Path, dir: &Path) -> Result<(), ImageError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ImageError::io(dir, e))?;
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in entries {
            paths.push(entry.map_err(|e| ImageError::io(dir, e))?.path());
        }
        paths.sort();
        for path in paths {
            let rel = path
                .strip_prefix(root)
                .map_err(|_| {
                    ImageError::Input(format!("{} is outside {}", path.display(), root.display()))
                })?
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| ImageError::io(&path, e))?;
            if meta.is_dir() {
                self.add_dir(&rel);
                self.add_host_dir(root, &path)?;
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| ImageError::io(&path, e))?;
                self.insert(&rel, Node::Symlink(target.to_string_lossy().into_owned()));
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let executable = meta.permissions().mode() & 0o111 != 0;
                self.insert(
                    &rel,
                    Node::File {
                        source: path.clone(),
                        executable,
                    },
                );
            } else {
                return Err(ImageError::Input(format!(
                    "{}: only files, directories and symlinks are allowed",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Entry paths in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Writes the uncompressed newc archive.
    pub fn write_cpio<W: Write>(&self, mut out: W, mtime: u32) -> Result<W, ImageError> {
        const S_IFDIR: u32 = 0o040000;
        const S_IFREG: u32 = 0o100000;
        const S_IFLNK: u32 = 0o120000;
        const S_IFCHR: u32 = 0o020000;
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let builder = cpio::newc::Builder::new(path)
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(mtime);
            let (builder, data): (_, Vec<u8>) = match node {
                Node::Dir => (builder.mode(S_IFDIR | 0o755).nlink(2), Vec::new()),
                Node::File { source, executable } => {
                    let data = std::fs::read(source).map_err(|e| ImageError::io(source, e))?;
                    let perm = if *executable { 0o755 } else { 0o644 };
                    (builder.mode(S_IFREG | perm).nlink(1), data)
                }
                Node::Symlink(target) => (
                    builder.mode(S_IFLNK | 0o777).nlink(1),
                    target.clone().into_bytes(),
                ),
                Node::CharDev { major, minor, mode } => (
                    builder
                        .mode(S_IFCHR | mode)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    Vec::new(),
                ),
            };
            let size = u32::try_from(data.len())
                .map_err(|_| ImageError::Input(format!("{path} is larger than 4 GiB")))?;
            let mut writer = builder.write(out, size);
            writer
                .write_all(&data)
                .map_err(|e| ImageError::io(Path::new(path), e))?;
            out = writer
                .finish()
                .map_err(|e| ImageError::io(Path::new(path), e))?;
        }
        cpio::newc::trailer(out).map_err(|e| ImageError::io(Path::new("TRAILER!!!"), e))
    }

    /// The zstd-compressed archive, as the kernel's initramfs unpacker takes it.
    pub fn build(&self, mtime: u32) -> Result<Vec<u8>, ImageError> {
        // Level 19 keeps the window within what the kernel decoder accepts.
        self.build_with_level(mtime, 19)
    }

    /// As [`Tree::build`] at another zstd level: test beds trade size for speed.
    pub fn build_with_level(&self, mtime: u32, level: i32) -> Result<Vec<u8>, ImageError> {
        let cpio = self.write_cpio(Vec::new(), mtime)?;
        zstd::stream::encode_all(cpio.as_slice(), level)
            .map_err(|e| ImageError::io(Path::new("initramfs"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeleton_has_mount_points_and_console() {
        let tree = Tree::skeleton();
        let paths: Vec<&str> = tree.paths().collect();
        for p in [
            "dev",
            "dev/console",
            "proc",
            "sys",
            "run",
            "tmp",
            "usr",
            "usr/bin",
            "var/lib/keel",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn archive_round_trips_through_a_reader() {
        let dir = std::env::temp_dir().join(format!("keel-initramfs-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
        std::fs::write(dir.join("etc/hello"), b"hi").expect("write");
        let mut tree = Tree::skeleton();
        tree.add_host_tree(&dir).expect("walk");
        tree.insert("init", Node::Symlink("usr/bin/keel-init".into()));
        let cpio = tree.write_cpio(Vec::new(), 1234).expect("cpio");
        let mut reader_input = cpio.as_slice();
        let mut seen = Vec::new();
        loop {
            let reader = cpio::newc::Reader::new(reader_input).expect("entry");
            if reader.entry().is_trailer() {
                break;
            }
            let name = reader.entry().name().to_string();
            assert_eq!(reader.entry().mtime(), 1234);
            assert_eq!(reader.entry().uid(), 0);
            if name == "etc/hello" {
                assert_eq!(reader.entry().file_size(), 2);
            }
            if name == "dev/console" {
                assert_eq!(
                    (reader.entry().rdev_major(), reader.entry().rdev_minor()),
                    (5, 1)
                );
            }
            seen.push(name);
            reader_input = reader.finish().expect("finish");
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "entries are in sorted order");
        assert!(seen.contains(&"etc/hello".to_string()));
        assert!(seen.contains(&"init".to_string()));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn same_tree_same_bytes() {
        let tree = Tree::skeleton();
        assert_eq!(tree.build(7).expect("a"), tree.build(7).expect("b"));
        assert_ne!(tree.build(7).expect("a"), tree.build(8).expect("c"));
    }
}
