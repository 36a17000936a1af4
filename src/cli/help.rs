//! `-h` and `-v` texts, laid out like ipvsadm's so muscle memory carries over.

use super::format::IPVS_VERSION;
use crate::control::proto;
use crate::model::DEFAULT_SCHEDULER;

/// `-v`: our version and what we are compatible with.
pub fn version() -> String {
    format!(
        "xvsadm v{} (ipvsadm v1.31 compatible, IPVS v{IPVS_VERSION} semantics)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The one-line hint printed after a usage error.
pub fn try_help(prog: &str) -> String {
    format!("Try `{prog} -h' or '{prog} --help' for more information.\n")
}

/// `-h`.
pub fn usage(prog: &str) -> String {
    let mut s = version();
    s.push_str(&format!(
        "Usage:
  {prog} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]
  {prog} -D virtual-service
  {prog} -C
  {prog} -R
  {prog} -S [-n]
  {prog} -a|e virtual-service -r server-address [options]
  {prog} -d virtual-service -r server-address
  {prog} -L|l [virtual-service] [options]
  {prog} -Z [virtual-service]
  {prog} --set tcp tcpfin udp
  {prog} --start-daemon {{master|backup}} [daemon-options]
  {prog} --stop-daemon {{master|backup}}
  {prog} -h

Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin (applied all or nothing)
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values (0 leaves one unchanged)
  --start-daemon              start connection sync daemon
  --stop-daemon               stop connection sync daemon
  --help            -h        display this help message
  --version         -v        display the version

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]

Options:
  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos,
                                      the default scheduler is {DEFAULT_SCHEDULER}.
  --persistent   -p [timeout]         persistent service (default timeout 300 s)
  --netmask      -M netmask           persistent granularity mask
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --weight       -w weight            capacity of real server (0..65535, default 1)
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --ops          -o                   one-packet scheduling (UDP only)
  --numeric      -n                   numeric output of ports
  --daemon                            output of daemon information
  --sched-flags  -b flags             scheduler flags (comma-separated): sh-fallback,
                                      sh-port for sh; mh-fallback, mh-port for mh
  --socket PATH                       xvsd control socket (default: ${env}, then {default})

Daemon Options:
  --syncid sid                        syncid for connection sync (default=0: no filter)
  --sync-maxlen length                Max sync message length (default=1472)
  --mcast-interface interface         multicast interface for connection sync (default=eth0)
  --mcast-group address               IPv4 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)

xvs only:
  {prog} --datapath                   data-path counters (XDP verdicts, per-queue frames, drops)
  {prog} --reload                     xvsd re-reads --config or --rules (as SIGHUP) and
                                      answers when done; non-zero if the file is refused
  {prog} --announce on|off|show       xvsd --announce-dev: off drains this director (every
                                      VIP withdrawn from the routing daemon, forwarding goes
                                      on), on announces the serving VIPs again; prints the
                                      state and the VIPs on the device
  --on-dead ipvs|expire|reassign      with -A/-E: what connections of a removed or dead real
                                      server get: dropped until they time out (ipvs, the
                                      default), expired at their next packet (expire), or
                                      moved (UDP) / reset (TCP) at once (reassign); not shown
                                      by -L or -S
  --sync-peer ADDR                    with --start-daemon (repeatable): the master also
                                      sends every sync datagram unicast to ADDR, the
                                      backup also accepts unicast (networks without
                                      multicast)
  --bulk-peer ADDR                    with --start-daemon backup: fetch the whole
                                      connection table from the director at ADDR (TCP, the
                                      sync port) at start, then follow the live updates

Differences from ipvsadm:
  Host names are never looked up (no DNS): give addresses as numbers, and listings
  always print numeric addresses; without -n, ports are still named from /etc/services.
  -e resets options not given (-g, -w 1, no thresholds), exactly like ipvsadm.
  -S does not save thresholds (-x/-y), exactly like ipvsadm.
  Not implemented in xvs yet: -f (fwmark services), IPv6, SCTP, --pe, GUE/GRE tunnels,
  IPv6 sync groups, --tun-info.
",
        env = proto::SOCKET_ENV,
        default = proto::DEFAULT_SOCKET,
    ));
    s
}
