//! Includes (`source`, `configfile`, `INCLUDE`) under one budget: bounded
//! depth, no loops, a bounded number of files and bytes in all.

use crate::entry::ConfigError;
use crate::fs::BootFs;
use crate::limits::{MAX_CONFIG_BYTES, MAX_INCLUDES, MAX_INCLUDE_DEPTH, MAX_TOTAL_CONFIG_BYTES};
use crate::text::read_config;

pub(crate) struct Includes {
    /// The files being read, outermost first (resolved paths).
    stack: Vec<String>,
    /// Every file entered; update-grub sources custom.cfg in both branches
    /// of an `if`, and branches are not evaluated, so a file is read once.
    seen: Vec<String>,
    count: usize,
    bytes: u64,
}

impl Includes {
    /// Reads the main config; `Ok(None)` if it does not exist.
    pub(crate) fn open_main(
        fs: &dyn BootFs,
        path: &str,
    ) -> Result<Option<(Self, String)>, ConfigError> {
        let Some(text) = read_config(fs, path, MAX_CONFIG_BYTES)? else {
            return Ok(None);
        };
        let resolved = fs.resolve(path).unwrap_or_else(|_| path.to_string());
        let me = Self {
            stack: vec![resolved],
            seen: Vec::new(),
            count: 0,
            bytes: text.len() as u64,
        };
        Ok(Some((me, text)))
    }

    /// Enters an include named at `from` line `line`. `Ok(None)` if the file
    /// does not exist (boot loaders carry on past a missing include); the
    /// caller must `leave` after a `Some`.
    pub(crate) fn enter(
        &mut self,
        fs: &dyn BootFs,
        path: &str,
        from: &str,
        line: usize,
    ) -> Result<Option<String>, ConfigError> {
        let resolved = match fs.resolve(path) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                log::warn!("{from} line {line}: {path} does not exist; skipping the include");
                return Ok(None);
            }
            Err(e) => return Err(ConfigError::fs(from, line, &e)),
        };
        if self.stack.contains(&resolved) {
            let mut chain = self.stack.clone();
            chain.push(resolved);
            return Err(ConfigError::new(
                from,
                line,
                format!("the include of {path} makes a loop: {}", chain.join(" -> ")),
            ));
        }
        if self.seen.contains(&resolved) {
            log::info!("{from} line {line}: {path} was read already; not reading it again");
            return Ok(None);
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(ConfigError::new(
                from,
                line,
                format!("includes nest deeper than {MAX_INCLUDE_DEPTH} levels at {path}"),
            ));
        }
        self.count += 1;
        if self.count > MAX_INCLUDES {
            return Err(ConfigError::new(
                from,
                line,
                format!("more than {MAX_INCLUDES} includes in all at {path}"),
            ));
        }
        let left = MAX_TOTAL_CONFIG_BYTES
            .saturating_sub(self.bytes)
            .min(MAX_CONFIG_BYTES);
        let Some(text) = read_config(fs, &resolved, left).map_err(|e| ConfigError {
            file: from.to_string(),
            line,
            message: format!("cannot include it: {e}"),
        })?
        else {
            return Ok(None);
        };
        self.bytes += text.len() as u64;
        self.seen.push(resolved.clone());
        self.stack.push(resolved);
        Ok(Some(text))
    }

    pub(crate) fn leave(&mut self) {
        self.stack.pop();
    }
}
