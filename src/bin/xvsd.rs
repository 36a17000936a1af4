//! xvsd: the xvs daemon. Thin wiring; the logic lives in `xvs::daemon`.

use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use xvs::control::proto;
use xvs::daemon::args::Args;

fn main() {
    // Under systemd stderr is the journal: `<N>` priorities, no timestamps. Elsewhere plain
    // lines, in colour only on a terminal (written to a file by demo.sh or bench.sh they
    // stay plain text).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if xvs::daemon::logging::stderr_is_journal() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(xvs::daemon::logging::JournalFormat::default())
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let a = Args::parse();
    if a.config_test {
        let path = a.config.as_deref().unwrap_or(std::path::Path::new(""));
        match xvs::daemon::kconf::load(path) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("{w}");
                }
                println!(
                    "{}: {} virtual server(s), configuration OK",
                    path.display(),
                    c.virtual_servers.len()
                );
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    let opts = xvs::daemon::DaemonOpts {
        interfaces: a.interface,
        socket: PathBuf::from(proto::socket_path(a.socket.as_deref())),
        workers: a.workers,
        conn_max: a.conn_max,
        reflect: a.reflect,
        busy_poll: a.busy_poll,
        worker_nice: a.worker_nice,
        fast_path: !a.no_fast_path,
        fast_path_max: a
            .fast_path_max
            .unwrap_or(a.conn_max.clamp(1, u32::MAX as usize) as u32),
        templates_max: a.templates_max.unwrap_or(a.conn_max.saturating_mul(2)),
        mid_flow: a.mid_flow,
        table_full: a.table_full,
        config: a.config,
        rules: a.rules,
        sync_daemons: a.sync_daemon,
        ready_file: a.ready_file,
        state_dir: a.state_dir,
        restart_hold: std::time::Duration::from_secs(a.restart_hold),
        bpf_pin_dir: a.bpf_pin_dir,
        web_listen: a.web_listen,
        announce_dev: a.announce_dev,
    };
    if let Err(e) = xvs::daemon::run(opts) {
        eprintln!("xvsd: {e:#}");
        std::process::exit(1);
    }
}
