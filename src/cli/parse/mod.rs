//! argv → [`Invocation`], with ipvsadm 1.31's syntax, checks and messages.
//!
//! ipvsadm parses with popt: short options may be clustered (`-Ln`, `-At 10.0.0.1:80`), an
//! option's value may be glued on (`-w2`, `--weight=2`), `-p` takes an *optional* value (the
//! next word is taken only if it does not start with `-`), and bare words are collected for
//! `--set`. After parsing, a table of legal command/option combinations produces the familiar
//! "Illegal 'weight' option with the 'add-service' command" messages; we keep that table-driven
//! design so every combination answers exactly as ipvsadm does.
//!
//! Deliberate differences (all more lenient, none rejects what ipvsadm accepts):
//! - the command may appear anywhere, not only as the first option (`-nL` works);
//! - a real server's default port is the service port whatever the order of `-r` and `-t`
//!   (ipvsadm copies the port seen *so far*, so `-r` before `-t` gave port 0).
//!
//! Layout: `options.rs` holds the option table and the popt-like tokenizer, `legality.rs` the
//! command/option legality table, `apply.rs` applies each option to the parse state in
//! command-line order, `build.rs` runs the command-specific checks and builds the result, and
//! `restore.rs` reads `-R` input. This file holds the public types and the driver.

mod apply;
mod build;
mod legality;
mod options;
mod restore;
#[cfg(test)]
mod testutil;

pub use restore::{parse_restore, restore_words};

use super::services::PortNames;
use crate::model::{Request, ServiceKey, Timeouts};
use apply::{apply, parse_timeout, State};
use build::build;
use legality::{check_legality, Cmd};
use options::{tokenize, Item, Tag};
use std::fmt;

/// Longest timeout ipvsadm accepts for `-p` and `--set`: 31 days, in seconds.
pub const MAX_TIMEOUT_SECS: u32 = 86400 * 31;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// `--socket PATH` (xvs only): the daemon's control socket.
    pub socket: Option<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A configuration change, sent to the daemon as one request.
    Change(Request),
    /// `-L` / `-l` (and no arguments at all).
    List(ListOpts),
    /// `-S [-n]`.
    Save(FormatOpts),
    /// `-R`: read ipvsadm-save lines from stdin and apply them as one batch.
    Restore,
    /// `-h`.
    Help,
    /// `-v`.
    Version,
    /// `--datapath` (xvs only): the data path's counters (XDP verdicts, per-worker frames and
    /// drops).
    DataPath,
    /// `-L -n --health` (xvs only): every checker of every real server (`xvsd --config`).
    Health,
    /// `--reload` (xvs only): xvsd re-reads `--config` or `--rules` as on SIGHUP and answers
    /// when done, so systemd's `ExecReload=` waits for it.
    Reload,
    /// `--announce on|off|show` (xvs only, `xvsd --announce-dev`): `off` drains the
    /// director (its VIPs are withdrawn from the routing daemon, forwarding goes on), `on`
    /// announces again; each prints the state. `None`: `show`.
    Announce(Option<bool>),
}

/// Options that change how addresses and numbers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FormatOpts {
    /// `-n`: print ports as numbers (addresses are always numeric in xvsadm).
    pub numeric: bool,
    /// `--exact`: print counters in full instead of with K/M/G/T suffixes.
    pub exact: bool,
    /// `--nosort`: keep the daemon's order instead of sorting by protocol, address, port.
    pub nosort: bool,
}

/// `-L` and its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOpts {
    pub view: ListView,
    pub format: FormatOpts,
}

/// Which listing `-L` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListView {
    /// The service table, all services (with banner) or one (`-L -t VIP:PORT`, no banner).
    Services {
        service: Option<ServiceKey>,
        columns: Columns,
    },
    /// `--timeout`.
    Timeout,
    /// `--daemon`: sync daemon state.
    Daemon,
    /// `-c`: the connection table. With `--persistent-conn` ipvsadm 1.31 adds "pe name" and
    /// "pe_data" columns to the header (filled only for persistence-engine entries, which xvs
    /// does not have).
    Connections { persistent_conn: bool },
}

/// The column set of a service listing. When several are given, the first in this order wins,
/// as in ipvsadm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    Default,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
}

/// How a parse error is reported; decides what is printed and the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// ipvsadm's `tryhelp_exit(argv[0], -1)`: no command, or a bad option before any command.
    /// Only the "Try `ipvsadm -h'" hint is printed (not the message); exit 255.
    TryHelp,
    /// A popt error after the command (unknown option, missing value): ipvsadm prints
    /// `"%s: %s\n"` of the argv word and popt's message, with no hint; exit 255.
    Usage,
    /// ipvsadm's `fail(2, ...)`: a recognised option with a bad value or combination. The
    /// message alone, no hint; exit 2.
    Invalid,
    /// A valid ipvsadm command xvs does not implement yet: exit 2.
    NotImplemented,
}

/// A command line that xvsadm refuses, with an ipvsadm-style message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub message: String,
}

impl ParseError {
    fn try_help(message: impl Into<String>) -> Self {
        ParseError {
            kind: ParseErrorKind::TryHelp,
            message: message.into(),
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        ParseError {
            kind: ParseErrorKind::Usage,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        ParseError {
            kind: ParseErrorKind::Invalid,
            message: message.into(),
        }
    }

    fn not_implemented(what: &str) -> Self {
        ParseError {
            kind: ParseErrorKind::NotImplemented,
            message: format!("{what}: not implemented in xvs yet"),
        }
    }

    /// Exit status ipvsadm uses for this kind of error (`-1` from main is 255).
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ParseErrorKind::TryHelp | ParseErrorKind::Usage => 255,
            ParseErrorKind::Invalid | ParseErrorKind::NotImplemented => 2,
        }
    }

    /// Whether the "Try `xvsadm -h'" hint is printed: only where ipvsadm calls
    /// `tryhelp_exit` ([`ParseErrorKind::TryHelp`]).
    pub fn wants_hint(&self) -> bool {
        self.kind == ParseErrorKind::TryHelp
    }

    /// Whether the message itself is printed: not for [`ParseErrorKind::TryHelp`], where
    /// ipvsadm prints the hint alone.
    pub fn shows_message(&self) -> bool {
        self.kind != ParseErrorKind::TryHelp
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a command line (without the program name) using the system's `/etc/services`.
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Invocation, ParseError> {
    parse_with(args, PortNames::system())
}

/// Parses a command line (without the program name) with an explicit port-name table.
pub fn parse_with<S: AsRef<str>>(args: &[S], names: &PortNames) -> Result<Invocation, ParseError> {
    let items = tokenize(args)?;
    // `-h` and `-v` answer at once when they are the first command, as in ipvsadm; after
    // another command they are refused like any second command (below).
    let first_command = items.iter().find_map(|item| match item {
        Item::Opt { tag, .. } if tag.is_command() => Some(*tag),
        _ => None,
    });
    match first_command {
        Some(Tag::Help) => return Ok(invocation(Command::Help, None)),
        Some(Tag::Version) => return Ok(invocation(Command::Version, None)),
        _ => {}
    }

    // `--datapath` and `-L --health` are xvs commands outside ipvsadm's table, each with
    // a short list of options it takes.
    if let Some(inv) = xvs_command(
        &items,
        Tag::DataPath,
        &[Tag::DataPath],
        Command::DataPath,
        "--datapath takes no options other than --socket",
    )? {
        return Ok(inv);
    }
    if let Some(inv) = xvs_command(
        &items,
        Tag::Health,
        &[Tag::Health, Tag::Cmd(Cmd::List), Tag::Numeric],
        Command::Health,
        "--health takes no options other than -L, -n and --socket",
    )? {
        return Ok(inv);
    }

    if let Some(inv) = xvs_command(
        &items,
        Tag::Reload,
        &[Tag::Reload],
        Command::Reload,
        "--reload takes no options other than --socket",
    )? {
        return Ok(inv);
    }

    if let Some(inv) = announce_command(&items)? {
        return Ok(inv);
    }

    let mut st = State::default();
    let mut only_socket = true;
    for item in items {
        match item {
            Item::Word(w) => st.words.push(w),
            Item::Opt { tag, value, word } => {
                only_socket &= tag == Tag::Socket;
                // ipvsadm takes its command from the first option only; a later command
                // option falls to `default: fail(2, "invalid option `%s'", poptBadOption())`.
                if tag.is_command() && (st.cmd.is_some() || !matches!(tag, Tag::Cmd(_))) {
                    return Err(ParseError::invalid(format!("invalid option `{word}'")));
                }
                apply(&mut st, tag, value, names)?;
            }
        }
    }
    // No arguments at all lists the table, as ipvsadm does (`--socket` alone counts as none).
    if only_socket && st.words.is_empty() {
        let list = ListOpts {
            view: ListView::Services {
                service: None,
                columns: Columns::Default,
            },
            format: FormatOpts::default(),
        };
        return Ok(invocation(Command::List(list), st.socket));
    }
    let Some(cmd) = st.cmd else {
        return Err(ParseError::try_help("no command specified"));
    };

    let mut words = std::mem::take(&mut st.words).into_iter();
    let mut timeouts = None;
    if cmd == Cmd::SetTimeout {
        let (Some(tcp), Some(fin), Some(udp)) = (words.next(), words.next(), words.next()) else {
            return Err(ParseError::invalid(
                "--set option requires 3 timeout values",
            ));
        };
        // 0 means "leave unchanged" and is passed through for the daemon to honour.
        timeouts = Some(Timeouts {
            tcp: parse_timeout(&tcp, 0)?,
            tcp_fin: parse_timeout(&fin, 0)?,
            udp: parse_timeout(&udp, 0)?,
        });
    }
    if let Some(extra) = words.next() {
        return Err(ParseError::invalid(format!("unexpected argument {extra}")));
    }

    check_legality(cmd, st.seen)?;
    build(cmd, st, timeouts)
}

/// `xvsd --sync-daemon 'master --mcast-interface eth0 --syncid 51'`: the words that follow
/// `xvsadm --start-daemon`, checked by the same parser, with the same messages.
pub fn parse_sync_daemon(words: &str) -> Result<crate::sync::daemon::SyncDaemonConfig, String> {
    let mut args = vec!["--start-daemon".to_string()];
    args.extend(words.split_whitespace().map(String::from));
    match parse_with(&args, &PortNames::empty()) {
        Ok(Invocation {
            command: Command::Change(Request::StartDaemon { config }),
            socket: None,
        }) => Ok(config),
        Ok(_) => Err("expected master|backup and --start-daemon options only".into()),
        Err(e) => Err(e.message),
    }
}

/// `--announce on|off|show [--socket PATH]`; `None`: not this command.
fn announce_command(items: &[Item]) -> Result<Option<Invocation>, ParseError> {
    let value = items.iter().find_map(|i| match i {
        Item::Opt {
            tag: Tag::Announce,
            value,
            ..
        } => Some(value.clone().unwrap_or_default()),
        _ => None,
    });
    let Some(value) = value else {
        return Ok(None);
    };
    let set = match value.as_str() {
        "on" => Some(true),
        "off" => Some(false),
        "show" => None,
        other => {
            return Err(ParseError::invalid(format!(
                "--announce {other}: expected on, off or show"
            )))
        }
    };
    let Some(inv) = xvs_command(
        items,
        Tag::Announce,
        &[Tag::Announce],
        Command::Announce(set),
        "--announce takes no options other than --socket",
    )?
    else {
        return Ok(None);
    };
    Ok(Some(inv))
}

fn invocation(command: Command, socket: Option<String>) -> Invocation {
    Invocation { command, socket }
}

/// An xvs command selected by `tag` anywhere on the line: the options in `allowed` and
/// `--socket` are accepted, anything else is refused with `refusal`. `None`: not this
/// command.
fn xvs_command(
    items: &[Item],
    tag: Tag,
    allowed: &[Tag],
    cmd: Command,
    refusal: &str,
) -> Result<Option<Invocation>, ParseError> {
    if !items
        .iter()
        .any(|i| matches!(i, Item::Opt { tag: t, .. } if *t == tag))
    {
        return Ok(None);
    }
    let mut socket = None;
    for item in items {
        match item {
            Item::Opt { tag: t, .. } if allowed.contains(t) => {}
            Item::Opt {
                tag: Tag::Socket,
                value,
                ..
            } => socket = value.clone(),
            Item::Word(w) => return Err(ParseError::invalid(format!("unexpected argument {w}"))),
            Item::Opt { .. } => return Err(ParseError::invalid(refusal)),
        }
    }
    Ok(Some(invocation(cmd, socket)))
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn save_restore_help_version_socket() {
        assert_eq!(
            p("-S").unwrap().command,
            Command::Save(FormatOpts::default())
        );
        assert_eq!(
            p("--save -n").unwrap().command,
            Command::Save(FormatOpts {
                numeric: true,
                ..FormatOpts::default()
            })
        );
        assert_eq!(p("-R").unwrap().command, Command::Restore);
        assert_eq!(p("--restore").unwrap().command, Command::Restore);
        assert_eq!(p("-h").unwrap().command, Command::Help);
        assert_eq!(p("--help").unwrap().command, Command::Help);
        assert_eq!(p("-h -A").unwrap().command, Command::Help);
        // After the command, -h is refused as ipvsadm refuses any second command.
        assert_eq!(err("-A -h").message, "invalid option `-h'");
        assert_eq!(err("-L -A").message, "invalid option `-A'");
        assert_eq!(err("-LZ").message, "invalid option `-LZ'");
        assert_eq!(p("-v").unwrap().command, Command::Version);
        assert_eq!(p("--version").unwrap().command, Command::Version);
        let i = p("--socket /tmp/x.sock -C").unwrap();
        assert_eq!(
            (i.command, i.socket.as_deref()),
            (Command::Change(Request::Clear), Some("/tmp/x.sock"))
        );
        let i = p("-L -n --health").unwrap();
        assert_eq!(i.command, Command::Health);
        assert!(p("-L --health -c").is_err());
        assert!(p("--health 10.0.0.1").is_err());
        let i = p("--datapath --socket /tmp/z.sock").unwrap();
        assert_eq!(
            (i.command, i.socket.as_deref()),
            (Command::DataPath, Some("/tmp/z.sock"))
        );
        assert_eq!(
            err("--datapath -n").message,
            "--datapath takes no options other than --socket"
        );
        assert_eq!(err("--datapath x").message, "unexpected argument x");
        assert_eq!(
            p("--announce off --socket /tmp/a.sock").unwrap(),
            Invocation {
                command: Command::Announce(Some(false)),
                socket: Some("/tmp/a.sock".into())
            }
        );
        assert_eq!(
            p("--announce on").unwrap().command,
            Command::Announce(Some(true))
        );
        assert_eq!(
            p("--announce=show").unwrap().command,
            Command::Announce(None)
        );
        assert_eq!(
            err("--announce maybe").message,
            "--announce maybe: expected on, off or show"
        );
        assert_eq!(
            err("--announce off -n").message,
            "--announce takes no options other than --socket"
        );
        let i = p("--reload --socket /tmp/r.sock").unwrap();
        assert_eq!(
            (i.command, i.socket.as_deref()),
            (Command::Reload, Some("/tmp/r.sock"))
        );
        assert_eq!(
            err("--reload -n").message,
            "--reload takes no options other than --socket"
        );
        assert_eq!(err("--reload now").message, "unexpected argument now");
        let i = p("--socket=/tmp/y.sock").unwrap();
        assert!(matches!(i.command, Command::List(_)));
        assert_eq!(i.socket.as_deref(), Some("/tmp/y.sock"));
        assert_eq!(
            err("-S -t 10.0.0.88:80").message,
            "Illegal 'service-address' option with the 'save' command"
        );
        assert_eq!(
            err("-R -n").message,
            "Illegal 'numeric' option with the 'restore' command"
        );
    }
}
