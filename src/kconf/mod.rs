//! keepalived.conf, the LVS part: `virtual_server`, `virtual_server_group`, `real_server`
//! and the checkers, with keepalived 2.2's keywords, aliases and defaults.
//!
//! Three stages, each with its own tests: `lexer` (files, includes, comments, definitions
//! → logical lines with locations), `parse` (lines → `{}` tree → the blocks as written),
//! `resolve` (defaults, inheritance, group expansion, keepalived's corrections → `model`).
//! The rest of keepalived's file (`global_defs`, `vrrp_*`, ...) is skipped and listed in
//! `KConfig::ignored`, since keepalived itself keeps doing VRRP from the same file (`-P`).

pub mod lexer;
pub mod model;
pub mod parse;
pub mod resolve;

pub use lexer::ReadOptions;
pub use model::*;

use std::path::Path;

/// Reads and resolves the keepalived.conf at `path` (and what it includes), with the host
/// name as config id for `@ID` lines, as keepalived does without `-i`.
pub fn load(path: &Path) -> Result<KConfig, ConfError> {
    load_with(path, &default_options())
}

/// `load` with explicit options (a config id as keepalived's `-i`).
pub fn load_with(path: &Path, opts: &ReadOptions) -> Result<KConfig, ConfError> {
    let mut warnings = Vec::new();
    let lines = lexer::read_file(path, opts, &mut warnings)?;
    finish(lines, warnings)
}

/// Parses `text` as the contents of `file` (includes are resolved relative to `file`'s
/// directory).
pub fn parse_str(text: &str, file: &Path) -> Result<KConfig, ConfError> {
    parse_str_with(text, file, &default_options())
}

/// `parse_str` with explicit options.
pub fn parse_str_with(text: &str, file: &Path, opts: &ReadOptions) -> Result<KConfig, ConfError> {
    let mut warnings = Vec::new();
    let lines = lexer::read_str(text, file, opts, &mut warnings)?;
    finish(lines, warnings)
}

fn finish(lines: Vec<lexer::Line>, mut warnings: Vec<ConfError>) -> Result<KConfig, ConfError> {
    let tree = parse::tree(lines)?;
    let mut raw = parse::parse(&tree)?;
    // Reader warnings come first: they are about earlier stages of the same lines.
    warnings.append(&mut raw.warnings);
    raw.warnings = warnings;
    resolve::resolve(raw)
}

/// keepalived's default config id: the node name up to its first dot (main.c).
pub fn default_options() -> ReadOptions {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id = host.trim().split('.').next().unwrap_or("").to_string();
    ReadOptions {
        config_id: (!id.is_empty()).then_some(id),
    }
}

#[cfg(test)]
mod tests;
