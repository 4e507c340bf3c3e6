//! GRUB 2's grub.cfg: menu entries, submenus, `set default`, the saved
//! entry from grubenv, `search --set=root`, includes.
//!
//! GRUB's script is a language; this reads it conservatively. Conditions
//! are not evaluated: the commands of every branch run in order, and a
//! `set` to an empty value is ignored, so the usual update-grub idioms
//! (`if [ "${next_entry}" ]; then ... else set default=... fi`) settle on
//! the value the branch that matters gives. Functions are never run.

pub mod grubenv;
mod lexer;

use std::cell::Cell;
use std::collections::HashMap;

use lexer::{lex, Part, Token, Word};

use crate::entry::{
    BootEntry, ConfigError, EntryKind, EntryList, Format, MenuStep, RootHint, Source,
};
use crate::fs::BootFs;
use crate::include::Includes;
use crate::limits::{MAX_BLOCK_DEPTH, MAX_ENTRIES, MAX_EXPANDED_BYTES, MAX_VARS};
use crate::text::{dirname, strip_device};

/// Where GRUB 2 keeps its config, on a root filesystem or a /boot partition.
pub const PATHS: &[&str] = &[
    "/boot/grub/grub.cfg",
    "/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/grub2/grub.cfg",
];

/// The first GRUB 2 config found on `fs` with at least one entry.
pub fn discover(fs: &dyn BootFs) -> Result<Option<EntryList>, ConfigError> {
    for path in PATHS {
        if let Some(list) = parse(fs, path)? {
            if list.entries.is_empty() {
                log::info!("{path} has no menu entries");
                continue;
            }
            return Ok(Some(list));
        }
    }
    Ok(None)
}

/// Parses the grub.cfg at `path` and what it includes; `Ok(None)` if absent.
pub fn parse(fs: &dyn BootFs, path: &str) -> Result<Option<EntryList>, ConfigError> {
    let Some((includes, text)) = Includes::open_main(fs, path)? else {
        return Ok(None);
    };
    let dir = dirname(path).to_string();
    let mut vars = HashMap::new();
    vars.insert("prefix".to_string(), dir.clone());
    vars.insert("config_directory".to_string(), dir.clone());
    vars.insert("root".to_string(), String::new());
    // update-grub loads the block next to grub.cfg with `load_env`; reading it
    // up front also covers configs that name ${saved_entry} without one.
    vars.extend(grubenv::load(
        fs,
        &format!("{}/grubenv", dir.trim_end_matches('/')),
    ));
    let mut interp = Interp {
        fs,
        vars,
        includes,
        entries: Vec::new(),
        default: None,
        expanded: Cell::new(0),
    };
    let stmts = parse_stmts(&lex(&text, path)?, path)?;
    let mut menu = Menu::default();
    interp.run(&stmts, &mut menu, path)?;
    let Interp {
        entries, default, ..
    } = interp;
    Ok(Some(EntryList::new(
        Format::Grub2,
        path.to_string(),
        entries,
        default.as_deref(),
    )))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Menuentry,
    Submenu,
    Function,
    Other,
}

#[derive(Debug)]
enum Stmt {
    Cmd {
        words: Vec<Word>,
        line: usize,
    },
    Block {
        kind: BlockKind,
        header: Vec<Word>,
        body: Vec<Stmt>,
        line: usize,
    },
}

/// Builds the statement tree; braces must balance.
fn parse_stmts(tokens: &[Token], file: &str) -> Result<Vec<Stmt>, ConfigError> {
    let mut pos = 0;
    let stmts = parse_body(tokens, &mut pos, file, 0, None)?;
    Ok(stmts)
}

/// Statements up to the matching "}" (when `open` names the block's line)
/// or the end of input.
fn parse_body(
    tokens: &[Token],
    pos: &mut usize,
    file: &str,
    depth: usize,
    open: Option<usize>,
) -> Result<Vec<Stmt>, ConfigError> {
    let mut out = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut line = 0;
    while let Some(tok) = tokens.get(*pos) {
        *pos += 1;
        match tok {
            Token::Sep => flush(&mut words, line, &mut out),
            Token::Word(w, l) => {
                if words.is_empty() {
                    line = *l;
                    match w.bare() {
                        // Branch keywords are dropped: both branches run.
                        Some("then" | "else" | "do" | "fi" | "done") => continue,
                        Some("}") => {
                            if open.is_some() {
                                return Ok(out);
                            }
                            return Err(ConfigError::new(file, *l, "this \"}\" closes no block"));
                        }
                        _ => {}
                    }
                }
                // A bare "}" also ends a block mid-command: `{ linux /a }`.
                if open.is_some() && w.bare() == Some("}") {
                    flush(&mut words, line, &mut out);
                    return Ok(out);
                }
                if w.bare() == Some("{") {
                    if depth >= MAX_BLOCK_DEPTH {
                        return Err(ConfigError::new(
                            file,
                            *l,
                            format!("blocks nest deeper than {MAX_BLOCK_DEPTH} levels"),
                        ));
                    }
                    let kind = match words.first().and_then(Word::bare) {
                        Some("menuentry") => BlockKind::Menuentry,
                        Some("submenu") => BlockKind::Submenu,
                        Some("function") => BlockKind::Function,
                        _ => BlockKind::Other,
                    };
                    let body = parse_body(tokens, pos, file, depth + 1, Some(line))?;
                    out.push(Stmt::Block {
                        kind,
                        header: std::mem::take(&mut words),
                        body,
                        line,
                    });
                    continue;
                }
                words.push(w.clone());
            }
        }
    }
    flush(&mut words, line, &mut out);
    match open {
        Some(l) => Err(ConfigError::new(
            file,
            l,
            "this block's \"{\" is never closed",
        )),
        None => Ok(out),
    }
}

fn flush(words: &mut Vec<Word>, line: usize, out: &mut Vec<Stmt>) {
    if words.is_empty() {
        return;
    }
    let words = std::mem::take(words);
    // Conditions and loop heads are not evaluated.
    if matches!(
        words.first().and_then(Word::bare),
        Some("if" | "elif" | "while" | "until" | "for")
    ) {
        return;
    }
    out.push(Stmt::Cmd { words, line });
}

/// The menu level being filled: the submenus above it and its next index.
#[derive(Default)]
struct Menu {
    parents: Vec<MenuStep>,
    next: usize,
}

struct Interp<'a> {
    fs: &'a dyn BootFs,
    vars: HashMap<String, String>,
    includes: Includes,
    entries: Vec<BootEntry>,
    default: Option<String>,
    /// Bytes produced by variable expansion so far: `set a=$a$a` doubles.
    expanded: Cell<u64>,
}

impl Interp<'_> {
    /// A word's value; `None` for an unquoted word that expands to nothing,
    /// which GRUB drops from the command.
    fn expand(&self, w: &Word) -> Option<String> {
        let mut s = String::new();
        for p in &w.parts {
            if self.expanded.get() > MAX_EXPANDED_BYTES {
                return None;
            }
            match p {
                Part::Lit(l) => s.push_str(l),
                // Always on in the GRUB versions that write it.
                Part::Var(v) if v == "menuentry_id_option" => s.push_str("--id"),
                Part::Var(v) => {
                    let value = self.vars.get(v).map(String::as_str).unwrap_or("");
                    self.expanded.set(self.expanded.get() + value.len() as u64);
                    s.push_str(value);
                }
            }
        }
        (w.quoted || !s.is_empty()).then_some(s)
    }

    fn expand_all(
        &self,
        words: &[Word],
        file: &str,
        line: usize,
    ) -> Result<Vec<String>, ConfigError> {
        let out = words.iter().filter_map(|w| self.expand(w)).collect();
        if self.expanded.get() > MAX_EXPANDED_BYTES {
            return Err(ConfigError::new(
                file,
                line,
                format!("variables expand to more than {MAX_EXPANDED_BYTES} bytes in all"),
            ));
        }
        Ok(out)
    }

    fn set(&mut self, name: &str, value: String) {
        if value.is_empty() || name == "menuentry_id_option" {
            return;
        }
        if !self.vars.contains_key(name) && self.vars.len() >= MAX_VARS {
            log::warn!("more than {MAX_VARS} variables; ignoring {name}");
            return;
        }
        if name == "default" {
            self.default = Some(value.clone());
        }
        self.vars.insert(name.to_string(), value);
    }

    fn run(&mut self, stmts: &[Stmt], menu: &mut Menu, file: &str) -> Result<(), ConfigError> {
        for stmt in stmts {
            match stmt {
                Stmt::Cmd { words, line } => self.command(words, *line, menu, file)?,
                Stmt::Block {
                    kind,
                    header,
                    body,
                    line,
                } => match kind {
                    BlockKind::Menuentry => self.menuentry(header, body, *line, menu, file)?,
                    BlockKind::Submenu => {
                        let step = self.menu_item(header, *line, menu, file)?;
                        let mut sub = Menu {
                            parents: menu.parents.iter().cloned().chain([step]).collect(),
                            next: 0,
                        };
                        self.run(body, &mut sub, file)?;
                    }
                    BlockKind::Function => {}
                    BlockKind::Other => self.run(body, menu, file)?,
                },
            }
        }
        Ok(())
    }

    fn command(
        &mut self,
        words: &[Word],
        line: usize,
        menu: &mut Menu,
        file: &str,
    ) -> Result<(), ConfigError> {
        let args = self.expand_all(words, file, line)?;
        let Some((cmd, rest)) = args.split_first() else {
            return Ok(());
        };
        match cmd.as_str() {
            "set" => {
                for a in rest {
                    if let Some((name, value)) = a.split_once('=') {
                        self.set(name, value.to_string());
                    }
                }
            }
            "load_env" => {
                let mut path = format!("{}/grubenv", self.var("prefix").trim_end_matches('/'));
                let mut names = Vec::new();
                let mut it = rest.iter();
                while let Some(a) = it.next() {
                    match a.as_str() {
                        "-f" | "--file" => {
                            if let Some(p) = it.next() {
                                path = strip_device(p);
                            }
                        }
                        "-s" | "--skip-sig" => {}
                        _ => match a.strip_prefix("--file=") {
                            Some(p) => path = strip_device(p),
                            None => names.push(a.clone()),
                        },
                    }
                }
                for (k, v) in grubenv::load(self.fs, &path) {
                    if names.is_empty() || names.contains(&k) {
                        self.set(&k, v);
                    }
                }
            }
            "source" | "configfile" | "." => {
                let Some(target) = rest.first() else {
                    return Ok(());
                };
                let target = strip_device(target);
                if let Some(text) = self.includes.enter(self.fs, &target, file, line)? {
                    let stmts = parse_stmts(&lex(&text, &target)?, &target);
                    let result = stmts.and_then(|s| self.run(&s, menu, &target));
                    self.includes.leave();
                    result?;
                }
            }
            _ => {
                // `name=value` is an assignment too.
                if rest.is_empty() {
                    if let Some((name, value)) = cmd.split_once('=') {
                        if is_name(name) {
                            self.set(name, value.to_string());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn var(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or("")
    }

    /// The title and id of a `menuentry`/`submenu` header, taking its index.
    fn menu_item(
        &mut self,
        header: &[Word],
        line: usize,
        menu: &mut Menu,
        file: &str,
    ) -> Result<MenuStep, ConfigError> {
        let args = self.expand_all(header.get(1..).unwrap_or(&[]), file, line)?;
        let mut title = None;
        let mut id = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--class" | "--users" | "--hotkey" => {
                    it.next();
                }
                "--id" => id = it.next().cloned(),
                _ if a.starts_with("--id=") => id = a.get(5..).map(str::to_string),
                _ if a.starts_with("--") => {}
                _ if title.is_none() => title = Some(a.clone()),
                _ => {}
            }
        }
        let Some(title) = title else {
            return Err(ConfigError::new(file, line, "this menu entry has no title"));
        };
        if self.entries.len() >= MAX_ENTRIES || menu.next >= MAX_ENTRIES {
            return Err(ConfigError::new(
                file,
                line,
                format!("more than {MAX_ENTRIES} menu entries"),
            ));
        }
        let step = MenuStep {
            index: menu.next,
            title,
            id,
        };
        menu.next += 1;
        Ok(step)
    }

    fn menuentry(
        &mut self,
        header: &[Word],
        body: &[Stmt],
        line: usize,
        menu: &mut Menu,
        file: &str,
    ) -> Result<(), ConfigError> {
        let step = self.menu_item(header, line, menu, file)?;
        let source = Source {
            format: Format::Grub2,
            file: file.to_string(),
            line,
        };
        let mut entry = BootEntry::new(0, String::new(), None, source);
        entry.path = menu.parents.iter().cloned().chain([step]).collect();
        // The body runs when the entry boots: its `set`s stay inside it.
        let saved = self.vars.clone();
        let saved_default = self.default.clone();
        let mut body_state = EntryBody::default();
        let result = self.entry_body(body, &mut entry, &mut body_state, file);
        self.vars = saved;
        self.default = saved_default;
        result?;
        body_state.finish(&mut entry);
        self.entries.push(entry);
        Ok(())
    }

    fn entry_body(
        &mut self,
        body: &[Stmt],
        entry: &mut BootEntry,
        st: &mut EntryBody,
        file: &str,
    ) -> Result<(), ConfigError> {
        for stmt in body {
            let (words, line) = match stmt {
                Stmt::Cmd { words, line } => (words, *line),
                // Blocks inside an entry (a nested `{ }`) run in place;
                // entries defined when an entry boots are not followed.
                Stmt::Block {
                    kind: BlockKind::Other,
                    body,
                    ..
                } => {
                    self.entry_body(body, entry, st, file)?;
                    continue;
                }
                Stmt::Block { .. } => continue,
            };
            let args = self.expand_all(words, file, line)?;
            let Some((cmd, rest)) = args.split_first() else {
                continue;
            };
            match cmd.as_str() {
                "linux" | "linux16" | "linuxefi" => {
                    let mut rest = rest.iter().skip_while(|a| a.starts_with("--"));
                    if let Some(k) = rest.next() {
                        st.linux = Some((strip_device(k), join_args(rest)));
                    }
                }
                "initrd" | "initrd16" | "initrdefi" => {
                    st.initrds = rest
                        .iter()
                        .filter(|a| !a.starts_with("--"))
                        .map(|a| strip_device(a))
                        .collect();
                }
                "multiboot" | "multiboot2" => st.multiboot = rest.first().map(|k| strip_device(k)),
                "module" | "module2" => {
                    let mut rest = rest.iter().skip_while(|a| a.starts_with("--"));
                    if let Some(m) = rest.next() {
                        st.modules.push((strip_device(m), join_args(rest)));
                    }
                }
                "chainloader" => st.other = Some("it chainloads another boot loader"),
                "fwsetup" => st.other = Some("it enters the firmware setup"),
                "search" | "search.fs_uuid" | "search.fs_label" | "search.file" => {
                    if let Some(hint) = search_hint(cmd, rest) {
                        entry.root_hint = Some(hint);
                    }
                }
                "set" => {
                    for a in rest {
                        if let Some((name, value)) = a.split_once('=') {
                            self.set(name, value.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What an entry's body named.
#[derive(Default)]
struct EntryBody {
    linux: Option<(String, String)>,
    initrds: Vec<String>,
    multiboot: Option<String>,
    modules: Vec<(String, String)>,
    other: Option<&'static str>,
}

impl EntryBody {
    fn finish(self, entry: &mut BootEntry) {
        if let Some((kernel, options)) = self.linux {
            entry.kernel = kernel;
            entry.options = options;
            entry.initrds = self.initrds;
            return;
        }
        // Xen: `multiboot2 /boot/xen.gz` loads dom0's kernel as the first
        // module; a guest wants that kernel, without Xen.
        if let Some(mb) = &self.multiboot {
            let is_xen = mb.rsplit('/').next().is_some_and(|n| n.starts_with("xen"));
            if let (true, Some((kernel, options))) = (is_xen, self.modules.first()) {
                entry.kernel = kernel.clone();
                entry.options = options.clone();
                entry.initrds = self.modules.iter().skip(1).map(|m| m.0.clone()).collect();
                return;
            }
            entry.kind = EntryKind::Unsupported(format!("it boots the multiboot kernel {mb}"));
            return;
        }
        entry.kind =
            EntryKind::Unsupported(self.other.unwrap_or("it names no linux kernel").to_string());
    }
}

/// GRUB passes a word with blanks quoted, so the kernel keeps it whole.
fn join_args<'a>(args: impl Iterator<Item = &'a String>) -> String {
    args.map(|a| {
        if a.contains([' ', '\t']) && !a.contains('"') {
            match a.split_once('=') {
                Some((k, v)) if !k.contains([' ', '\t']) => format!("{k}=\"{v}\""),
                _ => format!("\"{a}\""),
            }
        } else {
            a.clone()
        }
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// The filesystem `search` looks for when it sets `root`.
fn search_hint(cmd: &str, args: &[String]) -> Option<RootHint> {
    let mut kind = match cmd {
        "search.fs_uuid" => "uuid",
        "search.fs_label" => "label",
        _ => "file",
    };
    let mut var = None;
    let mut names = Vec::new();
    for a in args {
        match a.as_str() {
            "--fs-uuid" | "-u" => kind = "uuid",
            "--label" | "-l" => kind = "label",
            "--file" | "-f" => kind = "file",
            "--set" | "-s" => var = Some("root".to_string()),
            _ if a.starts_with("--set=") => var = a.get(6..).map(str::to_string),
            _ if a.starts_with('-') => {}
            _ => names.push(a.clone()),
        }
    }
    // `search.fs_uuid UUID VAR` names the variable after the UUID.
    if cmd != "search" {
        if let Some(v) = names.get(1) {
            var = Some(v.clone());
        } else {
            var = var.or(Some("root".to_string()));
        }
    }
    if var.as_deref() != Some("root") {
        return None;
    }
    let name = names.into_iter().next()?;
    Some(match kind {
        "uuid" => RootHint::Uuid(name),
        "label" => RootHint::Label(name),
        _ => RootHint::File(name),
    })
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
