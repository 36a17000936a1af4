//! Commands and the command/option legality table: ipvsadm 1.31's `commands_v_options` and
//! `generic_opt_check`.

use super::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    SetTimeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    /// The name ipvsadm uses in its messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::SetTimeout => "set",
            Cmd::StartDaemon => "start-daemon",
            Cmd::StopDaemon => "stop-daemon",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// Legality of each option column with this command, ipvsadm 1.31's table:
    /// `+` required, `x` illegal, `1` at most one of the `1` options, ` ` optional.
    fn rules(self) -> &'static [u8; NCOL] {
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxxx11       xxxxxxx xxxxx",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::StartDaemon => b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
            Cmd::StopDaemon => b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::SetTimeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        }
    }
}

/// Option columns of the legality table, in ipvsadm's order (which decides which error is
/// reported first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Col {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    McastInterface,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

const NCOL: usize = 34;

/// Column names as ipvsadm prints them in messages.
const COL_NAMES: [&str; NCOL] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

impl Col {
    pub(super) fn bit(self) -> u64 {
        1u64 << (self as u32)
    }

    pub(super) fn name(self) -> &'static str {
        COL_NAMES[self as usize]
    }
}

/// ipvsadm's `generic_opt_check`: walks the columns in order, first violation wins.
pub(super) fn check_legality(cmd: Cmd, seen: u64) -> Result<(), ParseError> {
    let rules = cmd.rules();
    let mut first_exclusive: Option<usize> = None;
    for (j, rule) in rules.iter().enumerate() {
        let given = seen & (1u64 << j) != 0;
        match (*rule, given) {
            (b'+', false) => {
                return Err(ParseError::invalid(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    COL_NAMES[j],
                    cmd.name()
                )))
            }
            (b'x', true) => {
                return Err(ParseError::invalid(format!(
                    "Illegal '{}' option with the '{}' command",
                    COL_NAMES[j],
                    cmd.name()
                )))
            }
            (b'1', true) => match first_exclusive {
                None => first_exclusive = Some(j),
                Some(last) => {
                    return Err(ParseError::invalid(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        COL_NAMES[j],
                        COL_NAMES[last],
                        cmd.name()
                    )))
                }
            },
            _ => {}
        }
    }
    Ok(())
}
