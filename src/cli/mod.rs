//! `xvsadm`: the ipvsadm-compatible command line, as library code.
//!
//! Existing ipvsadm scripts should work with only the binary name changed: same options, same
//! messages, same exit statuses, same listing and save formats. The pieces:
//! - [`parse`]: argv → [`Invocation`] (a [`Request`] for the daemon, or a listing to print);
//! - [`format`]: a daemon [`Status`](crate::model::Status) or connection table → `-L` / `-S`
//!   text;
//! - [`run`]: the whole command, with the [`Transport`] injected so it can be tested without
//!   a daemon; [`main`] wires it to the process's stdio and the control socket.
//!
//! Exit statuses follow ipvsadm: 0 success, 2 for a bad command line (`fail(2, ...)`), 255 for
//! usage errors and for changes the daemon refused (ipvsadm returns -1 from `main`), 1 when a
//! listing could not be produced.

pub mod addr;
pub mod format;
pub mod help;
pub mod parse;
pub mod services;

pub use format::{
    format_connections, format_datapath, format_save, format_services, format_timeout,
};
pub use parse::{
    parse, parse_restore, parse_with, Columns, Command, FormatOpts, Invocation, ListOpts, ListView,
    ParseError, ParseErrorKind,
};
pub use services::PortNames;

use crate::control::proto;
use crate::model::{ConnStatus, Request, Response, Status};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Exit statuses, as ipvsadm uses them.
pub mod exit {
    pub const OK: i32 = 0;
    /// A listing (`-L`, `-S`) could not be produced.
    pub const LIST_FAILED: i32 = 1;
    /// A bad option value or combination, a not-implemented feature, or no daemon to talk to.
    pub const BAD_ARGS: i32 = 2;
    /// A usage error, or a change the daemon refused.
    pub const FAILED: i32 = 255;
}

/// How the CLI reaches the daemon. [`SocketTransport`] is the real one; any
/// `FnMut(&Path, &Request) -> Result<Response>` is one too (tests pass closures), answering a
/// streamed request with a single message.
pub trait Transport {
    /// Sends one request and returns its response.
    fn call(&mut self, path: &Path, req: &Request) -> anyhow::Result<Response>;

    /// Sends a request answered by a stream (`-L -c`): hands each chunk to `chunk` as it
    /// arrives and returns the message that closed the stream.
    fn call_streamed(
        &mut self,
        path: &Path,
        req: &Request,
        chunk: &mut dyn FnMut(Vec<ConnStatus>) -> anyhow::Result<()>,
    ) -> anyhow::Result<Response>;
}

impl<F> Transport for F
where
    F: FnMut(&Path, &Request) -> anyhow::Result<Response>,
{
    fn call(&mut self, path: &Path, req: &Request) -> anyhow::Result<Response> {
        self(path, req)
    }

    /// A one-message answer: a `Connections` list is the whole stream.
    fn call_streamed(
        &mut self,
        path: &Path,
        req: &Request,
        chunk: &mut dyn FnMut(Vec<ConnStatus>) -> anyhow::Result<()>,
    ) -> anyhow::Result<Response> {
        match self(path, req)? {
            Response::Connections(c) => {
                let entries = c.len() as u64;
                chunk(c)?;
                Ok(Response::ConnectionsEnd { entries })
            }
            other => Ok(other),
        }
    }
}

/// The control socket ([`proto::call`], [`proto::call_streamed`]).
pub struct SocketTransport;

impl Transport for SocketTransport {
    fn call(&mut self, path: &Path, req: &Request) -> anyhow::Result<Response> {
        proto::call(path, req)
    }

    fn call_streamed(
        &mut self,
        path: &Path,
        req: &Request,
        chunk: &mut dyn FnMut(Vec<ConnStatus>) -> anyhow::Result<()>,
    ) -> anyhow::Result<Response> {
        proto::call_streamed(path, req, chunk)
    }
}

/// The streams a command uses; tests pass buffers.
pub struct Io<'a> {
    pub stdin: &'a mut dyn Read,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

impl Io<'_> {
    fn err(&mut self, msg: &str) {
        // Nothing useful can be done if stderr itself is gone.
        let _ = self.stderr.write_all(msg.as_bytes());
        if !msg.ends_with('\n') {
            let _ = self.stderr.write_all(b"\n");
        }
    }

    /// Writes command output; a closed stdout (`xvsadm -Ln | head -1`) fails quietly.
    fn out(&mut self, text: &str) -> i32 {
        match self
            .stdout
            .write_all(text.as_bytes())
            .and_then(|_| self.stdout.flush())
        {
            Ok(()) => exit::OK,
            Err(_) => exit::LIST_FAILED,
        }
    }
}

/// Runs one xvsadm command line. `prog` is the name used in hints, `args` excludes it;
/// `call` reaches the daemon at a socket path (normally [`SocketTransport`]). Returns the
/// process exit status. Nothing is sent when the command line is invalid.
pub fn run<F>(prog: &str, args: &[String], io: &mut Io<'_>, names: &PortNames, mut call: F) -> i32
where
    F: Transport,
{
    let inv = match parse::parse_with(args, names) {
        Ok(inv) => inv,
        Err(e) => return report_parse_error(prog, &e, io),
    };
    let path = PathBuf::from(proto::socket_path(inv.socket.as_deref()));
    match inv.command {
        Command::Help => io.out(&help::usage(prog)),
        Command::Version => io.out(&help::version()),
        Command::Change(req) => change(&path, &req, io, &mut call),
        Command::Restore => {
            let mut input = String::new();
            if let Err(e) = io.stdin.read_to_string(&mut input) {
                io.err(&format!("cannot read rules from stdin: {e}"));
                return exit::BAD_ARGS;
            }
            match parse::parse_restore(&input, names) {
                // The line number is xvs's own addition, so it is always shown.
                Err(e) => {
                    let _ = writeln!(io.stderr, "{}", e.message);
                    if e.wants_hint() {
                        io.err(&help::try_help(prog));
                    }
                    e.exit_code()
                }
                // ipvsadm -R on empty input changes nothing and succeeds.
                Ok(reqs) if reqs.is_empty() => exit::OK,
                Ok(reqs) => change(&path, &Request::Batch(reqs), io, &mut call),
            }
        }
        Command::List(opts) => list(&path, &opts, io, names, &mut call),
        Command::Save(fmt) => match fetch(&path, None, io, &mut call) {
            Ok(status) => io.out(&format::format_save(&status, fmt, names)),
            Err(code) => code,
        },
        Command::DataPath => {
            let got = ask(
                &path,
                &Request::DataPath,
                io,
                &mut call,
                exit::LIST_FAILED,
                |r| match r {
                    Response::DataPath(d) => Ok(d),
                    other => Err(other),
                },
            );
            match got {
                Ok(d) => io.out(&format::format_datapath(&d)),
                Err(code) => code,
            }
        }
        Command::Reload => {
            let got = ask(
                &path,
                &Request::Reload,
                io,
                &mut call,
                exit::FAILED,
                |r| match r {
                    Response::Reloaded(m) => Ok(m),
                    other => Err(other),
                },
            );
            match got {
                Ok(m) => io.out(&format!("{m}\n")),
                Err(code) => code,
            }
        }
        Command::Announce(set) => {
            let got = ask(
                &path,
                &Request::Announce { set },
                io,
                &mut call,
                exit::FAILED,
                |r| match r {
                    Response::Announce(a) => Ok(a),
                    other => Err(other),
                },
            );
            match got {
                Ok(a) => io.out(&format::format_announce(&a)),
                Err(code) => code,
            }
        }
        Command::Health => {
            let got = ask(
                &path,
                &Request::Health,
                io,
                &mut call,
                exit::LIST_FAILED,
                |r| match r {
                    Response::Health(h) => Ok(h),
                    other => Err(other),
                },
            );
            match got {
                Ok(Some(rows)) => io.out(&format::format_health(&rows)),
                Ok(None) => {
                    io.err("xvsd runs without --config: no health checks");
                    exit::LIST_FAILED
                }
                Err(code) => code,
            }
        }
    }
}

/// As ipvsadm: `fail()` prints the message and a newline (`"-6 used before -f\n"` thus ends
/// in a blank line), `tryhelp_exit()` the hint alone.
fn report_parse_error(prog: &str, e: &ParseError, io: &mut Io<'_>) -> i32 {
    if e.shows_message() {
        let _ = writeln!(io.stderr, "{}", e.message);
    }
    if e.wants_hint() {
        io.err(&help::try_help(prog));
    }
    e.exit_code()
}

/// Sends one request and takes the answer `want` picks out. The daemon's refusal is printed
/// as ipvsadm prints the kernel's (`No such service`, ...) and gives `fail`; another kind of
/// answer is reported by name; a transport failure gives its own code.
fn ask<F, T>(
    path: &Path,
    req: &Request,
    io: &mut Io<'_>,
    call: &mut F,
    fail: i32,
    want: impl FnOnce(Response) -> Result<T, Response>,
) -> Result<T, i32>
where
    F: Transport,
{
    let resp = match call.call(path, req) {
        Ok(r) => r,
        Err(e) => return Err(transport_error(path, &e, io)),
    };
    let expected = describe_request(req);
    match want(resp) {
        Ok(v) => Ok(v),
        Err(Response::Error(msg)) => {
            io.err(&msg);
            Err(fail)
        }
        Err(other) => {
            io.err(&format!(
                "unexpected answer from xvsd at {}: {} instead of {expected}",
                path.display(),
                describe(&other)
            ));
            Err(fail)
        }
    }
}

/// What answer a request expects, for "unexpected answer" messages.
fn describe_request(req: &Request) -> &'static str {
    match req {
        Request::Status { .. } => "a status",
        Request::DataPath => "data-path counters",
        Request::Connections => "a connection list",
        Request::Health => "health-check states",
        Request::Daemons => "sync daemon states",
        Request::Reload => "a reload outcome",
        Request::Announce { .. } => "the announce state",
        _ => "an acknowledgement",
    }
}

/// Sends a configuration change. A refusal is printed as ipvsadm prints the kernel's.
fn change<F>(path: &Path, req: &Request, io: &mut Io<'_>, call: &mut F) -> i32
where
    F: Transport,
{
    let got = ask(path, req, io, call, exit::FAILED, |r| match r {
        Response::Ok => Ok(()),
        Response::Error(msg) => Err(Response::Error(ipvs_strerror(req, msg))),
        other => Err(other),
    });
    got.err().unwrap_or(exit::OK)
}

/// libipvs's `ipvs_strerror`: the same refusal reads differently depending on the call. xvsd
/// answers a missing service with "No such service" whatever the request, and names the
/// missing scheduler; ipvsadm 1.31 says "Service not defined" for the real-server commands
/// (`ESRCH` from `ipvs_add_dest`/`ipvs_update_dest`/`ipvs_del_dest`) and "Scheduler or
/// persistence engine not found" (`ENOENT` from `ipvs_add_service`/`ipvs_update_service`).
fn ipvs_strerror(req: &Request, msg: String) -> String {
    match req {
        Request::AddDest { .. } | Request::EditDest { .. } | Request::DeleteDest { .. }
            if msg == "No such service" =>
        {
            "Service not defined".into()
        }
        Request::AddService { .. } | Request::EditService { .. }
            if msg.starts_with("Scheduler not found") =>
        {
            "Scheduler or persistence engine not found".into()
        }
        _ => msg,
    }
}

/// Asks the daemon for its status (one service or all).
fn fetch<F>(
    path: &Path,
    service: Option<crate::model::ServiceKey>,
    io: &mut Io<'_>,
    call: &mut F,
) -> Result<Status, i32>
where
    F: Transport,
{
    ask(
        path,
        &Request::Status { service },
        io,
        call,
        exit::LIST_FAILED,
        |r| match r {
            Response::Status(s) => Ok(s),
            other => Err(other),
        },
    )
}

/// Names a response kind for "unexpected answer" messages.
fn describe(r: &Response) -> &'static str {
    match r {
        Response::Ok => "an acknowledgement",
        Response::Status(_) => "a status",
        Response::Error(_) => "an error",
        Response::DataPath(_) => "data-path counters",
        Response::Connections(_) => "a connection list",
        Response::ConnectionsEnd { .. } => "the end of a connection list",
        Response::Health(_) => "health-check states",
        Response::Daemons(_) => "sync daemon states",
        Response::Reloaded(_) => "a reload outcome",
        Response::Announce(_) => "the announce state",
    }
}

/// `-L -c`: asks for the connection table and prints it as it arrives, a chunk at a time,
/// so that memory stays bounded whatever the table size. The header comes with the first
/// chunk (or the end), so a refusal prints nothing on stdout. A stream cut short fails the
/// listing (exit 1) after what had arrived.
fn list_connections<F>(
    path: &Path,
    persistent_conn: bool,
    fmt: FormatOpts,
    io: &mut Io<'_>,
    names: &PortNames,
    call: &mut F,
) -> i32
where
    F: Transport,
{
    let mut received = 0u64;
    let mut header = false;
    let mut write_failed = false;
    let mut text = String::new();
    let mut print = |conns: &[ConnStatus], stdout: &mut dyn Write| -> anyhow::Result<()> {
        text.clear();
        if !header {
            header = true;
            text.push_str(&format::connections_header(persistent_conn));
        }
        for c in conns {
            format::push_connection_line(&mut text, c, fmt, names);
        }
        received += conns.len() as u64;
        // A closed stdout (`xvsadm -Lcn | head`) ends the listing quietly.
        if stdout.write_all(text.as_bytes()).is_err() {
            write_failed = true;
            anyhow::bail!("stdout closed");
        }
        Ok(())
    };
    let stdout = &mut *io.stdout;
    let result = call.call_streamed(path, &Request::Connections, &mut |chunk| {
        print(&chunk, &mut *stdout)
    });
    let end = match result {
        Ok(Response::ConnectionsEnd { entries }) => {
            // The header, if no chunk came (an empty table); a failure sets `write_failed`.
            let _ = print(&[], &mut *stdout);
            Ok(entries)
        }
        Ok(other) => Err(other),
        Err(e) => {
            if write_failed {
                return exit::LIST_FAILED;
            }
            if !header {
                return transport_error(path, &e, io);
            }
            // The daemon was there and the listing began: it failed, as a listing.
            io.err(&format!("xvsd at {}: {e:#}", path.display()));
            return exit::LIST_FAILED;
        }
    };
    if write_failed || io.stdout.flush().is_err() {
        return exit::LIST_FAILED;
    }
    match end {
        Ok(entries) if entries == received => exit::OK,
        Ok(entries) => {
            io.err(&format!(
                "xvsd at {}: the connection listing announced {entries} entries but {received} arrived",
                path.display()
            ));
            exit::LIST_FAILED
        }
        Err(Response::Error(msg)) => {
            io.err(&msg);
            exit::LIST_FAILED
        }
        Err(other) => {
            io.err(&format!(
                "unexpected answer from xvsd at {}: {} instead of a connection list",
                path.display(),
                describe(&other)
            ));
            exit::LIST_FAILED
        }
    }
}

fn list<F>(path: &Path, opts: &ListOpts, io: &mut Io<'_>, names: &PortNames, call: &mut F) -> i32
where
    F: Transport,
{
    let fmt = opts.format;
    match opts.view {
        ListView::Daemon => {
            let got = ask(
                path,
                &Request::Daemons,
                io,
                call,
                exit::LIST_FAILED,
                |r| match r {
                    Response::Daemons(d) => Ok(d),
                    other => Err(other),
                },
            );
            match got {
                Ok(d) => io.out(&format::format_daemons(&d)),
                Err(code) => code,
            }
        }
        ListView::Connections { persistent_conn } => {
            list_connections(path, persistent_conn, fmt, io, names, call)
        }
        ListView::Timeout => match fetch(path, None, io, call) {
            Ok(status) => io.out(&format::format_timeout(&status.timeouts)),
            Err(code) => code,
        },
        ListView::Services { service, columns } => {
            let status = match fetch(path, service, io, call) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if let Some(key) = service {
                if !status.services.iter().any(|s| s.key == key) {
                    io.err("No such service");
                    return exit::LIST_FAILED;
                }
            }
            io.out(&format::format_services(
                &status, service, columns, fmt, names,
            ))
        }
    }
}

/// The daemon could not be reached or spoke nonsense: say which socket, and how to pick another.
fn transport_error(path: &Path, e: &anyhow::Error, io: &mut Io<'_>) -> i32 {
    let mut msg = format!("{e:#}");
    let shown = path.display().to_string();
    if !msg.contains(&shown) {
        msg = format!("xvsd at {shown}: {msg}");
    }
    io.err(&msg);
    let unreachable = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::PermissionDenied
            )
        })
    });
    if unreachable {
        io.err(&format!(
            "Is xvsd running? (use --socket PATH or ${} to reach another socket)",
            proto::SOCKET_ENV
        ));
    }
    exit::BAD_ARGS
}

/// The `xvsadm` binary: real argv, stdio, `/etc/services` and the control socket.
pub fn main() -> i32 {
    let mut argv = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let prog = argv.next().unwrap_or_else(|| "xvsadm".to_string());
    let args: Vec<String> = argv.collect();
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (mut stdin, mut stdout, mut stderr) = (stdin.lock(), stdout.lock(), stderr.lock());
    let mut io = Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
    };
    run(&prog, &args, &mut io, PortNames::system(), SocketTransport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Counters, Forward, Protocol, Rates, ServiceKey, ServiceOpts, ServiceStatus, Timeouts,
    };

    struct Outcome {
        code: i32,
        stdout: String,
        stderr: String,
        sent: Vec<(PathBuf, Request)>,
    }

    /// Runs a command line against a fake daemon that answers every request with `answer`.
    fn run_with(
        args: &str,
        stdin: &str,
        answer: impl Fn(&Request) -> anyhow::Result<Response>,
    ) -> Outcome {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = stdin.as_bytes();
        let mut sent = Vec::new();
        let names = PortNames::parse("http 80/tcp\n");
        let code = {
            let mut io = Io {
                stdin: &mut input,
                stdout: &mut out,
                stderr: &mut err,
            };
            run("xvsadm", &args, &mut io, &names, |p: &Path, r: &Request| {
                sent.push((p.to_path_buf(), r.clone()));
                answer(r)
            })
        };
        Outcome {
            code,
            stdout: String::from_utf8(out).unwrap(),
            stderr: String::from_utf8(err).unwrap(),
            sent,
        }
    }

    fn ok(_: &Request) -> anyhow::Result<Response> {
        Ok(Response::Ok)
    }

    fn status(_: &Request) -> anyhow::Result<Response> {
        Ok(Response::Status(Status {
            conn_table_size: 4096,
            timeouts: Timeouts::default(),
            services: vec![ServiceStatus {
                key: ServiceKey {
                    proto: Protocol::Tcp,
                    addr: "10.0.0.88".parse().unwrap(),
                    port: 80,
                },
                opts: ServiceOpts {
                    scheduler: "wrr".into(),
                    ..ServiceOpts::default()
                },
                counters: Counters::default(),
                rates: Rates {
                    cps: 12,
                    inpps: 340,
                    outpps: 0,
                    inbps: 150_000_000,
                    outbps: 0,
                },
                dests: vec![crate::model::DestStatus {
                    addr: "10.0.0.9".parse().unwrap(),
                    port: 80,
                    forward: Forward::Route,
                    weight: 2,
                    u_threshold: 0,
                    l_threshold: 0,
                    active_conns: 3162,
                    inactive_conns: 387,
                    persist_conns: 0,
                    counters: Counters::default(),
                    rates: Rates {
                        cps: 12,
                        inpps: 340,
                        outpps: 0,
                        inbps: 150_000_000,
                        outbps: 0,
                    },
                }],
            }],
        }))
    }

    const SOCK: &str = "--socket /tmp/xvs-test.sock";

    #[test]
    fn change_is_sent_to_the_chosen_socket() {
        let o = run_with(&format!("{SOCK} -C"), "", ok);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(
            o.sent,
            vec![(PathBuf::from("/tmp/xvs-test.sock"), Request::Clear)]
        );
        assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("", ""));
    }

    #[test]
    fn daemon_refusal_is_printed_like_ipvsadm() {
        let o = run_with(&format!("{SOCK} -D -t 10.0.0.1:80"), "", |_| {
            Ok(Response::Error("No such service".into()))
        });
        assert_eq!(o.code, 255);
        assert_eq!(o.stderr, "No such service\n");
        assert_eq!(o.sent.len(), 1);
    }

    #[test]
    fn parse_errors_send_nothing() {
        let o = run_with(
            &format!("{SOCK} -a -t 10.0.0.1:80 -r 10.0.0.9 -w 70000"),
            "",
            ok,
        );
        assert_eq!(o.code, 2);
        // ipvsadm's fail(): the message alone.
        assert_eq!(o.stderr, "illegal weight specified\n");
        assert!(o.sent.is_empty());

        // Before any command, ipvsadm's tryhelp_exit(): the hint alone, named after argv[0].
        let o = run_with("--bogus", "", ok);
        assert_eq!(o.code, 255);
        assert_eq!(
            o.stderr,
            "Try `xvsadm -h' or 'xvsadm --help' for more information.\n"
        );
        assert!(o.sent.is_empty());
        // After the command, popt's message alone.
        let o = run_with("-L --bogus", "", ok);
        assert_eq!(
            (o.code, o.stderr.as_str()),
            (255, "--bogus: unknown option\n")
        );
    }

    #[test]
    fn not_implemented_sends_nothing() {
        for args in [
            "-A -f 1 -s rr",
            "--start-daemon master --mcast-group ff02::1",
            "-L --tun-info",
        ] {
            let o = run_with(&format!("{SOCK} {args}"), "", status);
            assert_eq!(o.code, 2, "{args}");
            assert!(o.stderr.contains("not implemented"), "{args}: {}", o.stderr);
            assert!(!o.stderr.contains("Try `"), "{args}: {}", o.stderr);
            assert!(o.sent.is_empty(), "{args}");
        }
    }

    #[test]
    fn listing_and_save_and_timeout() {
        let o = run_with(&format!("{SOCK} -Ln"), "", status);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(o.sent[0].1, Request::Status { service: None });
        assert_eq!(
            o.stdout,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  10.0.0.88:80 wrr\n  \
             -> 10.0.0.9:80                  Route   2      3162       387       \n"
        );
        // Without -n the port is named.
        let o = run_with(SOCK, "", status);
        assert!(
            o.stdout.contains("TCP  10.0.0.88:http wrr\n"),
            "{}",
            o.stdout
        );

        let o = run_with(&format!("{SOCK} -S -n"), "", status);
        assert_eq!(
            o.stdout,
            "-A -t 10.0.0.88:80 -s wrr\n-a -t 10.0.0.88:80 -r 10.0.0.9:80 -g -w 2\n"
        );
        let o = run_with(&format!("{SOCK} -L --timeout"), "", status);
        assert_eq!(o.stdout, "Timeout (tcp tcpfin udp): 900 120 300\n");
    }

    #[test]
    fn one_service_listing() {
        let o = run_with(&format!("{SOCK} -L -n -t 10.0.0.88:80"), "", status);
        assert_eq!(o.code, 0);
        assert!(
            o.stdout.starts_with("Prot LocalAddress:Port"),
            "{}",
            o.stdout
        );
        let want = ServiceKey {
            proto: Protocol::Tcp,
            addr: "10.0.0.88".parse().unwrap(),
            port: 80,
        };
        assert_eq!(
            o.sent[0].1,
            Request::Status {
                service: Some(want)
            }
        );
        let o = run_with(&format!("{SOCK} -L -n -t 10.0.0.77:80"), "", status);
        assert_eq!((o.code, o.stderr.as_str()), (1, "No such service\n"));
        let o = run_with(&format!("{SOCK} -L -n -t 10.0.0.77:80"), "", |_| {
            Ok(Response::Error("No such service".into()))
        });
        assert_eq!((o.code, o.stderr.as_str()), (1, "No such service\n"));
    }

    #[test]
    fn restore_is_one_batch() {
        let input =
            "-C\n-A -t 10.0.0.88:80 -s rr\n# comment\n-a -t 10.0.0.88:80 -r 10.0.0.9 -w 3\n";
        let o = run_with(&format!("{SOCK} -R"), input, ok);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(o.sent.len(), 1);
        match &o.sent[0].1 {
            Request::Batch(reqs) => {
                assert_eq!(reqs.len(), 3);
                assert_eq!(reqs[0], Request::Clear);
            }
            other => panic!("{other:?}"),
        }
        // A bad line: nothing at all is sent.
        let o = run_with(
            &format!("{SOCK} -R"),
            "-C\n-a -t 10.0.0.88:80 -r nope\n",
            ok,
        );
        assert_eq!(o.code, 2);
        assert!(
            o.stderr
                .starts_with("line 2: illegal real server address[:port] specified\n"),
            "{}",
            o.stderr
        );
        assert!(o.sent.is_empty());
        // A line without a command: its number, then ipvsadm's hint (exit 255).
        let o = run_with(&format!("{SOCK} -R"), "-C\n-n\n", ok);
        assert_eq!(o.code, 255);
        assert_eq!(
            o.stderr,
            "line 2: no command specified\n\
             Try `xvsadm -h' or 'xvsadm --help' for more information.\n"
        );
        assert!(o.sent.is_empty());
        // Empty input: nothing to do.
        let o = run_with(&format!("{SOCK} -R"), "\n", ok);
        assert_eq!((o.code, o.sent.len()), (0, 0));
        // The daemon refuses the batch: all or nothing, reported once.
        let o = run_with(&format!("{SOCK} -R"), "-D -t 10.0.0.1:80\n", |_| {
            Ok(Response::Error("No such service".into()))
        });
        assert_eq!((o.code, o.stderr.as_str()), (255, "No such service\n"));
    }

    #[test]
    fn unreachable_daemon_names_the_socket() {
        let o = run_with(&format!("{SOCK} -C"), "", |_| {
            let io = std::io::Error::from(std::io::ErrorKind::NotFound);
            Err(anyhow::Error::new(io).context("cannot connect to xvsd at /tmp/xvs-test.sock"))
        });
        assert_eq!(o.code, 2);
        assert!(
            o.stderr
                .starts_with("cannot connect to xvsd at /tmp/xvs-test.sock: "),
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains("Is xvsd running?"), "{}", o.stderr);

        let o = run_with(&format!("{SOCK} -Ln"), "", |_| {
            Err(anyhow::anyhow!("protocol version mismatch"))
        });
        assert_eq!(o.code, 2);
        assert_eq!(
            o.stderr,
            "xvsd at /tmp/xvs-test.sock: protocol version mismatch\n"
        );
    }

    #[test]
    fn real_socket_failure_names_the_path() {
        // Through the real transport: a socket path that cannot exist.
        let args: Vec<String> = ["--socket", "/nonexistent-xvs-dir/xvsd.sock", "-C"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input: &[u8] = b"";
        let mut io = Io {
            stdin: &mut input,
            stdout: &mut out,
            stderr: &mut err,
        };
        let code = run("xvsadm", &args, &mut io, &PortNames::empty(), proto::call);
        let err = String::from_utf8(err).unwrap();
        assert_eq!(code, 2);
        assert!(err.contains("/nonexistent-xvs-dir/xvsd.sock"), "{err}");
        assert!(err.contains("Is xvsd running?"), "{err}");
    }

    #[test]
    fn datapath_counters() {
        let o = run_with(&format!("{SOCK} --datapath"), "", |_| {
            Ok(Response::DataPath(Box::new(crate::model::DataPathStats {
                nat_conns: 0,
                interface: "eth0".into(),
                xdp_mode: "generic".into(),
                xdp_redirected: 1,
                xdp_passed: 2,
                xdp_malformed: 0,
                xdp_no_socket: 0,
                xdp_fragments: 0,
                xdp_held: 0,
                workers: vec![],
                sync: vec![("sync_sent_msgs".into(), 4)],
                fast: vec![],
            })))
        });
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(o.sent[0].1, Request::DataPath);
        assert!(o.stdout.contains("\nxdp_passed: 2\n"), "{}", o.stdout);
        assert!(o.stdout.contains("\nsync_sent_msgs: 4\n"), "{}", o.stdout);
    }

    #[test]
    fn sync_daemons_listed_as_ipvsadm_and_refusals_as_the_kernels() {
        use crate::sync::daemon::{BulkState, DaemonStatus, Role};
        let d = |role, ifn: &str, syncid, maxlen| DaemonStatus {
            role,
            mcast_ifn: ifn.into(),
            syncid,
            sync_maxlen: maxlen,
            mcast_group: "224.0.0.81".parse().unwrap(),
            mcast_port: 8848,
            mcast_ttl: 1,
            peers: vec![],
            bulk_peer: None,
            bulk: BulkState::None,
        };
        let o = run_with(&format!("{SOCK} -L --daemon"), "", |_| {
            Ok(Response::Daemons(vec![
                d(Role::Master, "eth0", 51, 1472),
                d(Role::Backup, "eth1", 0, 1472),
            ]))
        });
        assert_eq!((o.code, o.stderr.as_str()), (0, ""));
        assert_eq!(o.sent[0].1, Request::Daemons);
        assert_eq!(
            o.stdout,
            "master sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
             backup sync daemon (mcast=eth1, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        );
        // None running: nothing at all, success.
        let o = run_with(&format!("{SOCK} -L --daemon"), "", |_| {
            Ok(Response::Daemons(vec![]))
        });
        assert_eq!((o.code, o.stdout.as_str()), (0, ""));
        // A refusal is printed as ipvsadm prints the kernel's, exit 255.
        let o = run_with(&format!("{SOCK} --start-daemon master"), "", |_| {
            Ok(Response::Error("Daemon has already run".into()))
        });
        assert_eq!(
            (o.code, o.stderr.as_str()),
            (255, "Daemon has already run\n")
        );
        let o = run_with(&format!("{SOCK} --stop-daemon backup"), "", |_| {
            Ok(Response::Error("No daemon is running".into()))
        });
        assert_eq!((o.code, o.stderr.as_str()), (255, "No daemon is running\n"));
        // A bad value sends nothing.
        let o = run_with(
            &format!("{SOCK} --start-daemon master --syncid 300"),
            "",
            |_| Ok(Response::Ok),
        );
        assert_eq!(
            (o.code, o.stderr.as_str()),
            (2, "illegal syncid specified\n")
        );
        assert!(o.sent.is_empty());
    }

    #[test]
    fn rate_listing() {
        let o = run_with(&format!("{SOCK} -L -n --rate"), "", status);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(o.sent[0].1, Request::Status { service: None });
        assert_eq!(
            o.stdout,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  \
             -> RemoteAddress:Port\n\
             TCP  10.0.0.88:80                       12      340        0  150000K        0\n  \
             -> 10.0.0.9:80                        12      340        0  150000K        0\n"
        );
        let o = run_with(&format!("{SOCK} -L --rate --exact"), "", status);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(
            o.stdout.contains(
                "\nTCP  10.0.0.88:http                     12      340        0 150000000        0\n"
            ),
            "{}",
            o.stdout
        );
        // One service: no banner, and the request names it.
        let o = run_with(&format!("{SOCK} -L -n --rate -t 10.0.0.88:80"), "", status);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(
            o.stdout.starts_with("Prot LocalAddress:Port  "),
            "{}",
            o.stdout
        );
        assert!(matches!(o.sent[0].1, Request::Status { service: Some(_) }));
    }

    fn connections(_: &Request) -> anyhow::Result<Response> {
        let ip = |s: &str| s.parse().unwrap();
        Ok(Response::Connections(vec![
            ConnStatus {
                proto: Protocol::Tcp,
                expires_ms: 899_400,
                state: "ESTABLISHED".into(),
                client_addr: ip("10.0.0.100"),
                client_port: 53216,
                virtual_addr: ip("10.0.0.88"),
                virtual_port: 80,
                dest_addr: ip("10.0.0.9"),
                dest_port: 80,
                template: false,
            },
            ConnStatus {
                proto: Protocol::Tcp,
                expires_ms: 299_999,
                state: "NONE".into(),
                client_addr: ip("10.0.0.100"),
                client_port: 0,
                virtual_addr: ip("10.0.0.88"),
                virtual_port: 80,
                dest_addr: ip("10.0.0.9"),
                dest_port: 80,
                template: true,
            },
        ]))
    }

    #[test]
    fn connection_listing() {
        let want = "IPVS connection entries\n\
                    pro expire state       source             virtual            destination\n\
                    TCP 14:59  ESTABLISHED 10.0.0.100:53216   10.0.0.88:80       10.0.0.9:80\n\
                    TCP 04:59  NONE        10.0.0.100:0       10.0.0.88:80       10.0.0.9:80\n";
        for args in [
            "-L -n -c",
            "-Lcn",
            "-Lnc",
            "-L -c -n --exact",
            "-l --connection -n",
        ] {
            let o = run_with(&format!("{SOCK} {args}"), "", connections);
            assert_eq!(o.code, 0, "{args}: {}", o.stderr);
            assert_eq!(
                o.sent,
                vec![(PathBuf::from("/tmp/xvs-test.sock"), Request::Connections)],
                "{args}"
            );
            assert_eq!(o.stdout, want, "{args}");
        }
        // Without -n, known ports are named (addresses stay numeric: no DNS).
        let o = run_with(&format!("{SOCK} -L -c"), "", connections);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(
            o.stdout.ends_with(
                "\nTCP 14:59  ESTABLISHED 10.0.0.100:53216   10.0.0.88:http     10.0.0.9:http\n\
                 TCP 04:59  NONE        10.0.0.100:0       10.0.0.88:http     10.0.0.9:http\n"
            ),
            "{}",
            o.stdout
        );
        // --persistent-conn: ipvsadm 1.31's wider header; no persistence engines, short lines.
        let o = run_with(
            &format!("{SOCK} -L -n -c --persistent-conn"),
            "",
            connections,
        );
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(
            o.stdout,
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination        \
             pe name          pe_data\n\
             TCP 14:59  ESTABLISHED 10.0.0.100:53216   10.0.0.88:80       10.0.0.9:80\n\
             TCP 04:59  NONE        10.0.0.100:0       10.0.0.88:80       10.0.0.9:80\n"
        );
        // An empty table still prints the banner and header.
        let o = run_with(&format!("{SOCK} -Lnc"), "", |_| {
            Ok(Response::Connections(vec![]))
        });
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (
                0,
                "IPVS connection entries\n\
                 pro expire state       source             virtual            destination\n"
            )
        );
        // Daemon errors and wrong answers fail the listing.
        let o = run_with(&format!("{SOCK} -Lnc"), "", |_| {
            Ok(Response::Error("connection table unavailable".into()))
        });
        assert_eq!(
            (o.code, o.stdout.as_str(), o.stderr.as_str()),
            (1, "", "connection table unavailable\n")
        );
        let o = run_with(&format!("{SOCK} -Lnc"), "", status);
        assert_eq!(o.code, 1);
        assert_eq!(
            o.stderr,
            "unexpected answer from xvsd at /tmp/xvs-test.sock: a status instead of a \
             connection list\n"
        );
        // Column options other than --persistent-conn conflict, as in ipvsadm: nothing sent.
        let o = run_with(&format!("{SOCK} -L -c --rate"), "", connections);
        assert_eq!(o.code, 2);
        assert!(
            o.stderr
                .starts_with("options conflicts in the list command\n"),
            "{}",
            o.stderr
        );
        assert!(o.sent.is_empty());
    }

    /// A daemon that streams `-L -c` in the given chunks, then closes with `end` (or cuts
    /// the stream short when `end` is `None`).
    struct Streaming {
        chunks: Vec<Vec<ConnStatus>>,
        end: Option<Response>,
    }

    impl Transport for Streaming {
        fn call(&mut self, _: &Path, req: &Request) -> anyhow::Result<Response> {
            panic!("{req:?} sent as a one-shot request")
        }
        fn call_streamed(
            &mut self,
            _: &Path,
            req: &Request,
            chunk: &mut dyn FnMut(Vec<ConnStatus>) -> anyhow::Result<()>,
        ) -> anyhow::Result<Response> {
            assert_eq!(*req, Request::Connections);
            for c in self.chunks.drain(..) {
                chunk(c)?;
            }
            self.end
                .take()
                .ok_or_else(|| anyhow::anyhow!("connection listing cut short after 3 chunk(s)"))
        }
    }

    fn run_streaming(args: &str, t: Streaming) -> Outcome {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input: &[u8] = b"";
        let code = {
            let mut io = Io {
                stdin: &mut input,
                stdout: &mut out,
                stderr: &mut err,
            };
            run(
                "xvsadm",
                &args,
                &mut io,
                &PortNames::parse("http 80/tcp\n"),
                t,
            )
        };
        Outcome {
            code,
            stdout: String::from_utf8(out).unwrap(),
            stderr: String::from_utf8(err).unwrap(),
            sent: Vec::new(),
        }
    }

    #[test]
    fn streamed_connection_listing_prints_chunks_as_one_listing() {
        let Ok(Response::Connections(two)) = connections(&Request::Connections) else {
            panic!()
        };
        let mut all = Vec::new();
        let mut chunks = Vec::new();
        for i in 0..3u16 {
            let mut c = two.clone();
            for e in &mut c {
                e.client_port += i;
            }
            all.extend(c.clone());
            chunks.push(c);
        }
        let names = PortNames::parse("http 80/tcp\n");
        for (args, fmt) in [("-L -c -n", true), ("-L -c", false)] {
            let o = run_streaming(
                &format!("{SOCK} {args}"),
                Streaming {
                    chunks: chunks.clone(),
                    end: Some(Response::ConnectionsEnd { entries: 6 }),
                },
            );
            assert_eq!((o.code, o.stderr.as_str()), (0, ""), "{args}");
            let fmt = FormatOpts {
                numeric: fmt,
                ..FormatOpts::default()
            };
            // Byte for byte what the one-message listing printed.
            assert_eq!(
                o.stdout,
                format_connections(&all, false, fmt, &names),
                "{args}"
            );
        }
        // An empty table: banner and header only.
        let o = run_streaming(
            &format!("{SOCK} -Lnc"),
            Streaming {
                chunks: vec![],
                end: Some(Response::ConnectionsEnd { entries: 0 }),
            },
        );
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (
                0,
                format_connections(&[], false, FormatOpts::default(), &names).as_str()
            )
        );
        // Cut short: what arrived is printed, the listing fails.
        let o = run_streaming(
            &format!("{SOCK} -Lnc"),
            Streaming {
                chunks: chunks.clone(),
                end: None,
            },
        );
        assert_eq!(o.code, 1);
        assert_eq!(o.stdout.lines().count(), 2 + 6);
        assert_eq!(
            o.stderr,
            "xvsd at /tmp/xvs-test.sock: connection listing cut short after 3 chunk(s)\n"
        );
        // A count that does not match what arrived, or an error at the end, fails too.
        let o = run_streaming(
            &format!("{SOCK} -Lnc"),
            Streaming {
                chunks: chunks.clone(),
                end: Some(Response::ConnectionsEnd { entries: 7 }),
            },
        );
        assert_eq!(o.code, 1);
        assert!(
            o.stderr.contains("announced 7 entries but 6 arrived"),
            "{}",
            o.stderr
        );
        let o = run_streaming(
            &format!("{SOCK} -Lnc"),
            Streaming {
                chunks,
                end: Some(Response::Error(
                    "the worker of queue 1 did not hand over its connections within 2 s".into(),
                )),
            },
        );
        assert_eq!(o.code, 1);
        assert_eq!(
            o.stderr,
            "the worker of queue 1 did not hand over its connections within 2 s\n"
        );
    }

    #[test]
    fn help_and_version() {
        let o = run_with("-h", "", ok);
        assert_eq!(o.code, 0);
        assert!(
            o.stdout.contains("Usage:\n  xvsadm -A|E virtual-service"),
            "{}",
            o.stdout
        );
        assert!(o.stdout.contains("no DNS"), "{}", o.stdout);
        assert!(o.stdout.contains("\n  --connection   -c  "), "{}", o.stdout);
        assert!(o.stdout.contains("\n  --rate  "), "{}", o.stdout);
        assert!(!o.stdout.contains("--rate."), "{}", o.stdout);
        assert!(o.sent.is_empty());
        let o = run_with("--version", "", ok);
        assert_eq!(o.code, 0);
        assert!(o.stdout.starts_with("xvsadm v"), "{}", o.stdout);
    }
}
