//! keepalived.conf reading: files, includes, comments, definitions and `~SEQ`, down to
//! logical lines of words, each with its location.
//!
//! This reimplements keepalived 2.2.7's `lib/parser.c` (`read_line`, `decomment`,
//! `alloc_strvec_r`, `check_include`, `check_definition`, `replace_param`, `add_seq`):
//!
//! - Comments start at an unquoted `#` or `!`; `\#` and `\!` outside quotes are literal.
//! - A line starting `@ID` is kept only if ID is the config id (`@^ID`: only if it is not).
//! - `$NAME=VALUE` defines a parameter; `$NAME` (followed by blank, `,`, `)` or the end) and
//!   `${NAME}` are replaced, recursively, at use. Undefined parameters stay as written.
//! - `~SEQ(VAR, [START,] [STEP,] END) TEXT` repeats TEXT with `$VAR` set to each value.
//! - `include GLOB` (and keepalived's `includer`/`includem`/`includew`/`includeb`/`includea`
//!   variants) splice the matching files in, relative paths resolved against the directory
//!   of the including file (keepalived `chdir`s there: `open_conf_file`).
//! - `{` and `}` outside quotes always end a logical line and form one of their own, so
//!   `real_server 10.0.0.1 80 { weight 2 }` is the four lines `real_server 10.0.0.1 80`,
//!   `{`, `weight 2`, `}` (keepalived's `line_residue`).
//! - Words are split on blanks; `"..."` is one word without its quotes (`alloc_strvec_r`).
//!   The line as written (`Line::raw`) is kept for keywords that re-split it with shell-like
//!   quoting and escapes (`notify_up`, `misc_path`, `regex`: `alloc_strvec_quoted_escaped`).

use super::model::{ConfError, Loc};
use std::path::{Path, PathBuf};

/// How deep `include` may nest. keepalived has no limit (it runs out of file descriptors on a
/// cycle); xvs refuses cycles outright and bounds the depth.
pub const MAX_INCLUDE_DEPTH: usize = 32;
/// Bound on `$PARAM` replacements in one line, so `$A=$A` cannot loop forever.
const MAX_REPLACEMENTS: usize = 1000;
/// Bound on the lines one `~SEQ` (nested ones included) may produce.
const MAX_SEQ_LINES: usize = 1_000_000;
/// keepalived reads lines into a 1024-byte buffer (`MAXBUF`, lib/parser.h); xvs allows
/// longer ones but bounds the result of parameter substitution.
const MAX_LINE: usize = 64 * 1024;

/// One logical line: a keyword and its arguments, or a lone `{` / `}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub loc: Loc,
    /// The text after comments, definitions and brace splitting, before word splitting.
    pub raw: String,
    pub words: Vec<String>,
}

impl Line {
    pub fn is_open(&self) -> bool {
        self.words.len() == 1 && self.words[0] == "{" && self.raw == "{"
    }
    pub fn is_close(&self) -> bool {
        self.words.len() == 1 && self.words[0] == "}" && self.raw == "}"
    }
}

/// Options of the reader.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// keepalived's config id for `@ID` lines (`-i`; default the host name up to its first
    /// dot, keepalived `main.c`). `None`: every `@ID` line is dropped, `@^ID` kept.
    pub config_id: Option<String>,
}

/// Which include variant: the `include_t` bits of lib/parser.c. Plain `include` reports
/// nothing as an error (keepalived logs at CONFIG_OK level); the variants make some cases
/// errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct IncludeKind {
    /// `INCLUDE_R`: unreadable, directory or executable matches are errors.
    read: bool,
    /// `INCLUDE_M`: a missing literal file is an error.
    missing: bool,
    /// `INCLUDE_W`: a wildcard matching nothing is an error.
    wildcard: bool,
}

struct Def {
    name: String,
    value: String,
}

struct Reader<'a> {
    opts: &'a ReadOptions,
    defs: Vec<Def>,
    out: Vec<Line>,
    warnings: &'a mut Vec<ConfError>,
    /// Files being read, outermost first (for cycle detection).
    stack: Vec<PathBuf>,
    seq_lines: usize,
}

fn err(loc: &Loc, msg: impl Into<String>) -> ConfError {
    ConfError {
        loc: loc.clone(),
        msg: msg.into(),
    }
}

/// Reads `text` (the contents of `file`) and everything it includes into logical lines.
pub fn read_str(
    text: &str,
    file: &Path,
    opts: &ReadOptions,
    warnings: &mut Vec<ConfError>,
) -> Result<Vec<Line>, ConfError> {
    let mut r = Reader {
        opts,
        defs: Vec::new(),
        out: Vec::new(),
        warnings,
        stack: vec![canonical(file)],
        seq_lines: 0,
    };
    r.read_text(text, file)?;
    Ok(r.out)
}

/// Reads the file at `path` and everything it includes.
pub fn read_file(
    path: &Path,
    opts: &ReadOptions,
    warnings: &mut Vec<ConfError>,
) -> Result<Vec<Line>, ConfError> {
    let text = read_to_string(
        path,
        &Loc {
            file: path.to_path_buf(),
            line: 0,
        },
    )?;
    read_str(&text, path, opts, warnings)
}

fn read_to_string(path: &Path, at: &Loc) -> Result<String, ConfError> {
    let bytes = std::fs::read(path).map_err(|e| {
        err(
            at,
            format!("Configuration file '{}' open problem ({e})", path.display()),
        )
    })?;
    // keepalived works on bytes; a stray non-UTF-8 byte (in a comment, say) should not
    // make the whole file unreadable.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Reader<'_> {
    fn read_text(&mut self, text: &str, file: &Path) -> Result<(), ConfError> {
        for (i, phys) in text.split('\n').enumerate() {
            let loc = Loc {
                file: file.to_path_buf(),
                line: u32::try_from(i + 1).unwrap_or(u32::MAX),
            };
            let phys = phys.trim_end_matches(['\r', '\n']);
            if phys.is_empty() {
                continue;
            }
            let (line, cont) = decomment(phys, &loc)?;
            if cont {
                // keepalived only gives a trailing `\` a meaning in multi-line `$NAME=`
                // definitions (read_line's multiline_param_def).
                if line.starts_with('$') && check_definition(&line).is_some() {
                    return Err(err(
                        &loc,
                        "multi-line parameter definitions are not supported by xvs",
                    ));
                }
            }
            if line.is_empty() {
                continue;
            }
            self.process(line, &loc, 0)?;
        }
        Ok(())
    }

    /// One decommented line: conditionals, definitions, ~SEQ, substitution, includes,
    /// then brace splitting (read_line's inner loop).
    fn process(&mut self, mut line: String, loc: &Loc, seq_depth: usize) -> Result<(), ConfError> {
        let mut replacements = 0usize;
        loop {
            if line.starts_with('@') {
                match self.conditional(&line) {
                    Some(rest) => line = rest,
                    None => return Ok(()),
                }
                if line.is_empty() {
                    return Ok(());
                }
            }
            if line.starts_with('$') {
                if let Some((name, value)) = check_definition(&line) {
                    self.set_def(name, value);
                    return Ok(());
                }
            }
            if line.starts_with("~SEQ") {
                return self.seq(&line, loc, seq_depth);
            }
            if line.starts_with("~LST") {
                return Err(err(loc, "~LST is not supported by xvs"));
            }
            if line.starts_with('~') {
                // keepalived stops processing the line here (a `~` it does not know) and
                // hands it on as it is; it then fails as an unknown keyword.
                break;
            }
            if !line.contains('$') {
                break;
            }
            match self.replace_params(&line, loc, &mut replacements)? {
                Some(new) => {
                    let (new, _) = decomment(&new, loc)?;
                    line = new;
                    if line.is_empty() {
                        return Ok(());
                    }
                    if !(line.starts_with('@') || line.contains('$')) {
                        break;
                    }
                }
                None => break,
            }
        }
        if let Some((kind, pattern)) = is_include(&line) {
            return self.include(kind, pattern.trim_start_matches([' ', '\t']), loc);
        }
        self.split_braces(&line, loc)
    }

    /// `@ID rest` / `@^ID rest`: the rest if it applies to this host.
    fn conditional(&self, line: &str) -> Option<String> {
        let (neg, body) = match line.strip_prefix("@^") {
            Some(b) => (true, b),
            None => (false, &line[1..]),
        };
        // "We need something after the system_id" (read_line).
        let sp = body.find([' ', '\t'])?;
        let id = &body[..sp];
        let matches = self.opts.config_id.as_deref() == Some(id);
        if matches != neg {
            Some(body[sp..].trim_start_matches([' ', '\t']).to_string())
        } else {
            None
        }
    }

    fn set_def(&mut self, name: &str, value: &str) {
        match self.defs.iter_mut().find(|d| d.name == name) {
            Some(d) => d.value = value.to_string(),
            None => self.defs.push(Def {
                name: name.to_string(),
                value: value.to_string(),
            }),
        }
    }

    /// The value of a parameter: user definitions first (they may override the standard
    /// ones), then keepalived's standard `$_PWD`, `$_HASH`, `$_BANG` (set_std_definitions).
    fn lookup(&self, name: &str, loc: &Loc) -> Option<String> {
        if let Some(d) = self.defs.iter().find(|d| d.name == name) {
            return Some(d.value.clone());
        }
        match name {
            // get_cwd(): keepalived has chdir'ed to the directory of the file being read.
            "_PWD" => Some(
                loc.file
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| canonical(p).display().to_string())
                    .or_else(|| {
                        std::env::current_dir()
                            .ok()
                            .map(|p| p.display().to_string())
                    })
                    .unwrap_or_else(|| ".".to_string()),
            ),
            "_HASH" => Some("#".to_string()),
            "_BANG" => Some("!".to_string()),
            _ => None,
        }
    }

    /// One pass of replace_param: every `$NAME` / `${NAME}` that is defined is replaced,
    /// scanning on through the replaced text (so values are expanded recursively).
    /// `None` if nothing was defined.
    fn replace_params(
        &self,
        line: &str,
        loc: &Loc,
        count: &mut usize,
    ) -> Result<Option<String>, ConfError> {
        let mut buf: Vec<char> = line.chars().collect();
        let mut pos = 0usize;
        let mut found = false;
        while pos < buf.len() {
            if buf[pos] != '$' || pos + 1 >= buf.len() {
                pos += 1;
                continue;
            }
            let braces = buf[pos + 1] == '{';
            let start = pos + 1 + usize::from(braces);
            let mut end = start;
            if end < buf.len() && (buf[end].is_ascii_alphabetic() || buf[end] == '_') {
                end += 1;
                while end < buf.len() && (buf[end].is_ascii_alphanumeric() || buf[end] == '_') {
                    end += 1;
                }
            }
            if end == start {
                pos += 1;
                continue;
            }
            // find_definition: `${NAME}` needs its `}`; `$NAME` must be followed by a blank,
            // `,`, `)` or the end of the line.
            let ok_end = if braces {
                end < buf.len() && buf[end] == '}'
            } else {
                end >= buf.len() || matches!(buf[end], ' ' | '\t' | ',' | ')')
            };
            let name: String = buf[start..end].iter().collect();
            let value = if ok_end {
                self.lookup(&name, loc)
            } else {
                None
            };
            // keepalived's other standard definitions: `$_INSTANCE` (the -i instance name)
            // and `$_RANDOM [MIN MAX]` (a random number per use).
            if value.is_none()
                && (name == "_INSTANCE" || name == "_RANDOM")
                && !self.defs.iter().any(|d| d.name == name)
            {
                return Err(err(loc, format!("${name} is not supported by xvs")));
            }
            let Some(value) = value else {
                pos += 1;
                continue;
            };
            *count += 1;
            if *count > MAX_REPLACEMENTS {
                return Err(err(
                    loc,
                    format!("parameter substitution does not end (${name} refers to itself?)"),
                ));
            }
            let replaced_end = if braces { end + 1 } else { end };
            buf.splice(pos..replaced_end, value.chars());
            if buf.len() > MAX_LINE {
                return Err(err(
                    loc,
                    format!(
                        "Parameter substitution on line '{line}' would exceed maximum line length"
                    ),
                ));
            }
            found = true;
            // keepalived stops substituting the line once a value starting with `~` went in.
            if value.trim_start_matches([' ', '\t']).starts_with('~') {
                break;
            }
        }
        Ok(found.then(|| buf.into_iter().collect()))
    }

    /// `~SEQ(VAR, ...) TEXT` (add_seq), expanded at once.
    fn seq(&mut self, line: &str, loc: &Loc, depth: usize) -> Result<(), ConfError> {
        let bad = || err(loc, format!("Invalid ~SEQ specification '{line}'"));
        let mut p = &line[4..];
        let hex = p.starts_with('x');
        if hex {
            p = &p[1..];
        }
        let p = p.trim_start_matches([' ', '\t']);
        let p = p.strip_prefix('(').ok_or_else(bad)?;
        let close = p.find(')').ok_or_else(bad)?;
        let (args, text) = (&p[..close], &p[close + 1..]);
        let text = text.trim_start_matches([' ', '\t']).to_string();
        let mut parts = args.split(',').map(|s| s.trim_matches([' ', '\t']));
        let var = parts
            .next()
            .filter(|v| !v.is_empty())
            .ok_or_else(bad)?
            .to_string();
        let mut nums = Vec::new();
        for a in parts {
            // The parameters may themselves be definitions.
            let mut n = 0;
            let a = self
                .replace_params(a, loc, &mut n)?
                .unwrap_or_else(|| a.to_string());
            nums.push(parse_c_long(a.trim()).ok_or_else(bad)?);
        }
        // add_seq: (END) counts 1..END (or -1 down to END), (START, END) steps by ±1,
        // (START, STEP, END) must step towards END.
        let (start, step, end) = match nums[..] {
            [end] => (
                if end < 0 { -1 } else { 1 },
                if end < 1 { -1 } else { 1 },
                end,
            ),
            [start, end] => (start, if start <= end { 1 } else { -1 }, end),
            [start, step, end] => {
                if step == 0 || (start < end && step < 0) || (start > end && step > 0) {
                    return Err(err(loc, format!("Invalid ~SEQ values '{line}'")));
                }
                (start, step, end)
            }
            _ => return Err(bad()),
        };
        if hex && (start < 0 || end < 0) {
            return Err(err(
                loc,
                format!("~SEQx is only valid for positive numbers '{line}'"),
            ));
        }
        let mut v = start;
        loop {
            if (step > 0 && v > end) || (step < 0 && v < end) {
                break;
            }
            self.seq_lines += 1;
            if self.seq_lines > MAX_SEQ_LINES {
                return Err(err(loc, "~SEQ expands to too many lines"));
            }
            let val = if hex { format!("{v:x}") } else { v.to_string() };
            self.set_def(&var, &val);
            self.process(text.clone(), loc, depth + 1)?;
            match v.checked_add(step) {
                Some(n) => v = n,
                None => break,
            }
        }
        Ok(())
    }

    fn include(&mut self, kind: IncludeKind, pattern: &str, loc: &Loc) -> Result<(), ConfError> {
        if pattern.is_empty() {
            return Ok(());
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(err(
                loc,
                format!("include '{pattern}': includes nested deeper than {MAX_INCLUDE_DEPTH}"),
            ));
        }
        // Relative to the including file's directory (keepalived chdir()s into it).
        let base = loc.file.parent().unwrap_or(Path::new(""));
        let mut matches = Vec::new();
        let mut wildcard = false;
        for alt in expand_braces(pattern) {
            let full = if Path::new(&alt).is_absolute() || base.as_os_str().is_empty() {
                PathBuf::from(&alt)
            } else {
                base.join(&alt)
            };
            let full_s = full.to_string_lossy().into_owned();
            if alt.contains(['*', '?', '[']) {
                wildcard = true;
                // glob(3) semantics: `*` matches neither `/` nor a leading `.` (so editor
                // droppings like `.x.conf.swp` stay out).
                let mo = glob::MatchOptions {
                    case_sensitive: true,
                    require_literal_separator: true,
                    require_literal_leading_dot: true,
                };
                let paths = glob::glob_with(&full_s, mo)
                    .map_err(|e| err(loc, format!("include '{pattern}': bad pattern: {e}")))?;
                for p in paths.flatten() {
                    matches.push(p);
                }
            } else if std::fs::symlink_metadata(&full).is_ok() {
                matches.push(full);
            } else if kind.missing {
                return Err(err(loc, format!("Config files missing '{pattern}'.")));
            } else {
                self.warnings
                    .push(err(loc, format!("Config files missing '{pattern}'.")));
            }
        }
        if matches.is_empty() && wildcard {
            let msg = format!("No config files matched '{pattern}'.");
            if kind.wildcard {
                return Err(err(loc, msg));
            }
            self.warnings.push(err(loc, msg));
        }
        for path in matches {
            // check_glob_file: directories and non-regular or executable files are skipped.
            let meta = std::fs::metadata(&path);
            let regular = meta.as_ref().map(|m| m.is_file()).unwrap_or(false);
            let exec = meta
                .as_ref()
                .map(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
                .unwrap_or(false);
            if !regular || exec {
                let msg = if meta.as_ref().map(|m| m.is_dir()).unwrap_or(false) {
                    format!(
                        "Configuration file '{}' is a directory - skipping",
                        path.display()
                    )
                } else {
                    format!(
                        "Configuration file '{}' is not a regular non-executable file - skipping",
                        path.display()
                    )
                };
                if kind.read {
                    return Err(err(loc, msg));
                }
                self.warnings.push(err(loc, msg));
                continue;
            }
            let canon = canonical(&path);
            if self.stack.contains(&canon) {
                return Err(err(
                    loc,
                    format!("include cycle: '{}' is already being read", path.display()),
                ));
            }
            let text = match read_to_string(&path, loc) {
                Ok(t) => t,
                Err(e) if !kind.read => {
                    self.warnings.push(ConfError {
                        msg: format!("{} - skipping", e.msg),
                        ..e
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.stack.push(canon);
            let res = self.read_text(&text, &path);
            self.stack.pop();
            res?;
        }
        Ok(())
    }

    /// Splits off `{` and `}` (outside quotes) as lines of their own, then words.
    fn split_braces(&mut self, line: &str, loc: &Loc) -> Result<(), ConfError> {
        let mut rest = line.trim_matches([' ', '\t']);
        while !rest.is_empty() {
            let (piece, next) = if rest.starts_with(['{', '}']) {
                rest.split_at(1)
            } else {
                match find_unquoted_brace(rest) {
                    Some(i) => rest.split_at(i),
                    None => (rest, ""),
                }
            };
            let piece = piece.trim_matches([' ', '\t']);
            if !piece.is_empty() {
                let words = split_words(piece, loc)?;
                if !words.is_empty() {
                    self.out.push(Line {
                        loc: loc.clone(),
                        raw: piece.to_string(),
                        words,
                    });
                }
            }
            rest = next.trim_matches([' ', '\t']);
        }
        Ok(())
    }
}

/// is_include(): `include` then a blank, or `include[rmwba]` then a blank.
fn is_include(line: &str) -> Option<(IncludeKind, &str)> {
    let rest = line.strip_prefix("include")?;
    // isspace() in keepalived: ASCII blanks only (so the slicing below is on char bounds).
    let b = rest.as_bytes();
    let c = *b.first()?;
    if c.is_ascii_whitespace() {
        return Some((IncludeKind::default(), &rest[1..]));
    }
    if !b.get(1)?.is_ascii_whitespace() {
        return None;
    }
    let (read, missing, wildcard) = match c {
        b'r' => (true, false, false),
        // includem: INCLUDE_R | INCLUDE_M; includeb: INCLUDE_R | INCLUDE_B (xvs treats brace
        // alternatives like literal names: a missing one is missing).
        b'm' | b'b' => (true, true, false),
        b'w' | b'a' => (true, true, true),
        _ => return None,
    };
    Some((
        IncludeKind {
            read,
            missing,
            wildcard,
        },
        &rest[2..],
    ))
}

/// GLOB_BRACE: `a{b,c}d` → `abd`, `acd` (nested braces too), in order; `\{` is literal.
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut depth = 0usize;
    let mut open = None;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '{' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let o = open.unwrap_or(0);
                    let prefix: String = chars[..o].iter().collect();
                    let suffix: String = chars[i + 1..].iter().collect();
                    let mut alts = Vec::new();
                    let mut d = 0usize;
                    let mut cur = String::new();
                    let mut j = o + 1;
                    while j < i {
                        let c = chars[j];
                        match c {
                            '\\' if j + 1 < i => {
                                cur.push(c);
                                cur.push(chars[j + 1]);
                                j += 1;
                            }
                            '{' => {
                                d += 1;
                                cur.push(c);
                            }
                            '}' => {
                                d = d.saturating_sub(1);
                                cur.push(c);
                            }
                            ',' if d == 0 => alts.push(std::mem::take(&mut cur)),
                            _ => cur.push(c),
                        }
                        j += 1;
                    }
                    alts.push(cur);
                    if alts.len() < 2 {
                        // `{x}` is not an alternation for glob(3) either: literal.
                        break;
                    }
                    return alts
                        .into_iter()
                        .flat_map(|a| expand_braces(&format!("{prefix}{a}{suffix}")))
                        .collect();
                }
            }
            _ => {}
        }
        i += 1;
    }
    vec![pattern.to_string()]
}

/// decomment(): leading blanks and comments removed, `\#`/`\!` outside quotes unescaped,
/// trailing blanks removed. The bool says the line ended in a continuation `\`.
pub fn decomment(line: &str, loc: &Loc) -> Result<(String, bool), ConfError> {
    let s = line.trim_start_matches([' ', '\t']);
    let mut out = String::with_capacity(s.len());
    let mut quote = false;
    let mut cont = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quote = !quote;
                out.push(c);
            }
            '\\' => match chars.peek() {
                None => {
                    cont = true;
                }
                Some(&n) if !quote && (n == '#' || n == '!') => {
                    out.push(n);
                    chars.next();
                }
                Some(&n) => {
                    out.push(c);
                    out.push(n);
                    chars.next();
                }
            },
            '#' | '!' if !quote => break,
            _ => out.push(c),
        }
    }
    if quote {
        // keepalived reports "Unterminated quote" and goes on with the line as it is; the
        // words it then makes are not what was meant, so xvs stops.
        return Err(err(loc, format!("Unterminated quote '{}'", s.trim_end())));
    }
    let t = out.trim_end_matches([' ', '\t']).to_string();
    Ok((t, cont))
}

/// check_definition(): `$NAME=VALUE` (no blank before `=`), value after leading blanks.
fn check_definition(line: &str) -> Option<(&str, &str)> {
    let body = line.strip_prefix('$')?;
    let first = body.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let eq = body.find('=')?;
    let name = &body[..eq];
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((name, body[eq + 1..].trim_start_matches([' ', '\t'])))
}

fn find_unquoted_brace(s: &str) -> Option<usize> {
    let mut quote = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quote = !quote,
            '{' | '}' if !quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// alloc_strvec_r(): blank-separated words; `"..."` is a word of its own without the
/// quotes (no escapes inside); a `"` inside a word ends that word.
pub fn split_words(s: &str, loc: &Loc) -> Result<Vec<String>, ConfError> {
    const WS: &[char] = &[' ', '\t', '\x0c', '\n', '\r', '\x0b'];
    let mut words = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(WS);
        if rest.is_empty() {
            break;
        }
        if let Some(q) = rest.strip_prefix('"') {
            match q.find('"') {
                Some(end) => {
                    words.push(q[..end].to_string());
                    rest = &q[end + 1..];
                }
                None => return Err(err(loc, format!("Unmatched quote: '{s}'"))),
            }
        } else {
            let end = rest
                .find(|c: char| WS.contains(&c) || c == '"')
                .unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    Ok(words)
}

/// alloc_strvec_quoted_escaped(): shell-like words. Blanks separate words; `"..."` and
/// `'...'` quote (and join with what is around them); `\` escapes: `\n \t \r \a \b \f \v
/// \E`, `\xHH`, `\cX` (control), octal `\NNN`, anything else literally.
pub fn split_quoted_escaped(s: &str, loc: &Loc) -> Result<Vec<String>, ConfError> {
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut i = 0;
    let ws = |c: char| matches!(c, ' ' | '\t' | '\x0c' | '\n' | '\r' | '\x0b');
    while i < chars.len() {
        while i < chars.len() && ws(chars[i]) {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' {
                i += 1;
                let Some(&e) = chars.get(i) else {
                    return Err(err(loc, format!("Missing escape char at end: '{s}'")));
                };
                if e == 'x' && chars.get(i + 1).is_some_and(|c| c.is_ascii_hexdigit()) {
                    i += 1;
                    let mut v: u32 = 0;
                    while let Some(d) = chars.get(i).and_then(|c| c.to_digit(16)) {
                        // keepalived accumulates into a char: only the low 8 bits count.
                        v = ((v << 4) | d) & 0xff;
                        i += 1;
                    }
                    word.push(char::from(v as u8));
                } else if e == 'c' && i + 1 < chars.len() {
                    word.push(char::from((chars[i + 1] as u32 & 0x1f) as u8));
                    i += 2;
                } else if ('0'..='7').contains(&e) {
                    let mut v: u32 = 0;
                    let mut n = 0;
                    while n < 3 {
                        match chars.get(i).and_then(|c| c.to_digit(8)) {
                            Some(d) => {
                                v = (v << 3) + d;
                                i += 1;
                                n += 1;
                            }
                            None => break,
                        }
                    }
                    word.push(char::from((v & 0xff) as u8));
                } else {
                    word.push(match e {
                        'a' => '\x07',
                        'b' => '\x08',
                        'E' => '\x1b',
                        'f' => '\x0c',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'v' => '\x0b',
                        other => other,
                    });
                    i += 1;
                }
                continue;
            }
            match quote {
                Some(q) if c == q => {
                    quote = None;
                    i += 1;
                }
                Some(_) => {
                    word.push(c);
                    i += 1;
                }
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    i += 1;
                }
                None if ws(c) => break,
                None => {
                    word.push(c);
                    i += 1;
                }
            }
        }
        if let Some(q) = quote {
            return Err(err(loc, format!("String '{s}': missing terminating {q}")));
        }
        words.push(word);
    }
    Ok(words)
}

/// strtol(s, &end, 0) over the whole string: decimal, `0x` hex or `0` octal, optional sign.
fn parse_c_long(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else {
        body.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<Vec<String>> {
        lines_with(text, None)
    }

    fn lines_with(text: &str, id: Option<&str>) -> Vec<Vec<String>> {
        let mut w = Vec::new();
        let opts = ReadOptions {
            config_id: id.map(str::to_string),
        };
        read_str(text, Path::new("t.conf"), &opts, &mut w)
            .unwrap()
            .into_iter()
            .map(|l| l.words)
            .collect()
    }

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn comments_both_kinds_and_escapes() {
        assert_eq!(
            lines("a b # c\n! all\nd \"e # f\" ! g\nh \\#i\n"),
            vec![v(&["a", "b"]), v(&["d", "e # f"]), v(&["h", "#i"])]
        );
    }

    #[test]
    fn braces_are_lines_of_their_own() {
        assert_eq!(
            lines("real_server 1.2.3.4 80 { weight 2 }\n}{\n"),
            vec![
                v(&["real_server", "1.2.3.4", "80"]),
                v(&["{"]),
                v(&["weight", "2"]),
                v(&["}"]),
                v(&["}"]),
                v(&["{"]),
            ]
        );
        // Quoted braces stay.
        assert_eq!(lines("x \"{a}\"\n"), vec![v(&["x", "{a}"])]);
    }

    #[test]
    fn line_numbers_survive_splitting() {
        let mut w = Vec::new();
        let l = read_str(
            "\n\na {\n  b\n}\n",
            Path::new("f"),
            &ReadOptions::default(),
            &mut w,
        )
        .unwrap();
        let nums: Vec<u32> = l.iter().map(|l| l.loc.line).collect();
        assert_eq!(nums, vec![3, 3, 4, 5]);
    }

    #[test]
    fn quotes_make_one_word() {
        assert_eq!(lines("a \"b c\"d\n"), vec![v(&["a", "b c", "d"])]);
        let mut w = Vec::new();
        let e = read_str("a \"b\n", Path::new("f"), &ReadOptions::default(), &mut w).unwrap_err();
        assert_eq!(e.to_string(), "f:1: Unterminated quote 'a \"b'");
    }

    #[test]
    fn conditional_lines() {
        let t = "@main a 1\n@backup a 2\n@^main b 3\nc\n";
        assert_eq!(lines_with(t, Some("main")), vec![v(&["a", "1"]), v(&["c"])]);
        assert_eq!(
            lines_with(t, Some("backup")),
            vec![v(&["a", "2"]), v(&["b", "3"]), v(&["c"])]
        );
    }

    #[test]
    fn definitions_replace_recursively_at_use() {
        let t = "$BASE=10.2.${SUB}\n$SUB=0\nip ${BASE}.100\n$SUB=10\nip ${BASE}.100\nx $UNDEF y\n";
        assert_eq!(
            lines(t),
            vec![
                v(&["ip", "10.2.0.100"]),
                v(&["ip", "10.2.10.100"]),
                v(&["x", "$UNDEF", "y"])
            ]
        );
        // `$NAME` needs a blank, `,`, `)` or the end after it.
        assert_eq!(
            lines("$P=80\na $P\nb $Px\n"),
            vec![v(&["a", "80"]), v(&["b", "$Px"])]
        );
        let e = read_str(
            "x $_RANDOM\n",
            Path::new("f"),
            &ReadOptions::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "f:1: $_RANDOM is not supported by xvs");
        assert_eq!(
            lines("y ${_HASH}x\n"),
            vec![v(&["y"])],
            "a replaced # starts a comment, as in keepalived"
        );
        let mut w = Vec::new();
        let e = read_str(
            "$A=$A\nx $A\n",
            Path::new("f"),
            &ReadOptions::default(),
            &mut w,
        )
        .unwrap_err();
        assert_eq!(e.loc.line, 2);
    }

    #[test]
    fn seq_repeats_lines() {
        assert_eq!(
            lines("~SEQ(i, 1, 3) rs 10.0.0.$i\n"),
            vec![
                v(&["rs", "10.0.0.1"]),
                v(&["rs", "10.0.0.2"]),
                v(&["rs", "10.0.0.3"])
            ]
        );
        assert_eq!(
            lines("~SEQ(i, 5, -2, 1) n $i\n"),
            vec![v(&["n", "5"]), v(&["n", "3"]), v(&["n", "1"])]
        );
        assert_eq!(
            lines("~SEQx(i, 9, 11) n $i\n"),
            vec![v(&["n", "9"]), v(&["n", "a"]), v(&["n", "b"])]
        );
        assert_eq!(
            lines("~SEQ(i, 2) n $i\n"),
            vec![v(&["n", "1"]), v(&["n", "2"])]
        );
        let mut w = Vec::new();
        let e = read_str(
            "~SEQ(i, 1, -1, 3) x\n",
            Path::new("f"),
            &ReadOptions::default(),
            &mut w,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:1: Invalid ~SEQ values '~SEQ(i, 1, -1, 3) x'"
        );
    }

    #[test]
    fn quoted_escaped_words() {
        let l = Loc::default();
        assert_eq!(
            split_quoted_escaped(r#"notify_up "/bin/x 'a b' c\"d" root"#, &l).unwrap(),
            v(&["notify_up", "/bin/x 'a b' c\"d", "root"])
        );
        assert_eq!(
            split_quoted_escaped(r#"/bin/x 'a b' c\"d e\x41\tz"#, &l).unwrap(),
            v(&["/bin/x", "a b", "c\"d", "eA\tz"])
        );
        assert!(split_quoted_escaped("a 'b", &l).is_err());
    }

    #[test]
    fn include_variants_and_odd_blanks() {
        // Not an include: a non-ASCII blank after the word (isspace() is ASCII only).
        assert_eq!(lines("include\u{3000}x\n"), vec![v(&["include\u{3000}x"])]);
        assert_eq!(lines("includex y\n"), vec![v(&["includex", "y"])]);
        let mut w = Vec::new();
        let e = read_str(
            "includem /nonexistent/xvs.conf\n",
            Path::new("f"),
            &ReadOptions::default(),
            &mut w,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:1: Config files missing '/nonexistent/xvs.conf'."
        );
        let e = read_str(
            "includew /nonexistent/*.conf\n",
            Path::new("f"),
            &ReadOptions::default(),
            &mut w,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:1: No config files matched '/nonexistent/*.conf'."
        );
        // Plain include: warnings only.
        let l = read_str(
            "include /nonexistent/xvs.conf\nx\n",
            Path::new("f"),
            &ReadOptions::default(),
            &mut w,
        )
        .unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            w.last().unwrap().msg,
            "Config files missing '/nonexistent/xvs.conf'."
        );
    }

    #[test]
    fn brace_alternatives() {
        assert_eq!(expand_braces("a{b,c}d"), v(&["abd", "acd"]));
        assert_eq!(expand_braces("x{1,{2,3}}"), v(&["x1", "x2", "x3"]));
        assert_eq!(expand_braces("plain*.conf"), v(&["plain*.conf"]));
        assert_eq!(expand_braces("{one}"), v(&["{one}"]));
    }

    #[test]
    fn includes_globs_relative_to_the_including_file() {
        let dir = std::env::temp_dir().join(format!("xvs-kconf-lex-{}", std::process::id()));
        let sub = dir.join("conf.d");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("b.conf"), "b 2\ninclude ../c.inc\n").unwrap();
        std::fs::write(sub.join("a.conf"), "a 1\n").unwrap();
        std::fs::write(sub.join(".hidden.conf"), "hidden\n").unwrap();
        std::fs::write(dir.join("c.inc"), "c 3\n").unwrap();
        std::fs::write(
            dir.join("main.conf"),
            "x\ninclude conf.d/*.conf\ninclude nothere/*.conf\ny\n",
        )
        .unwrap();
        let mut w = Vec::new();
        let l = read_file(&dir.join("main.conf"), &ReadOptions::default(), &mut w).unwrap();
        let words: Vec<_> = l.iter().map(|l| l.words.clone()).collect();
        assert_eq!(
            words,
            vec![
                v(&["x"]),
                v(&["a", "1"]),
                v(&["b", "2"]),
                v(&["c", "3"]),
                v(&["y"])
            ]
        );
        assert_eq!(l[3].loc.file, sub.join("../c.inc"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].msg, "No config files matched 'nothere/*.conf'.");
        // A cycle is refused.
        std::fs::write(dir.join("loop.conf"), "include loop.conf\n").unwrap();
        let e = read_file(&dir.join("loop.conf"), &ReadOptions::default(), &mut w).unwrap_err();
        assert!(e.msg.starts_with("include cycle"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
