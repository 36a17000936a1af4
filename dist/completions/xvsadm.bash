# bash completion for xvsadm (and ipvsadm when it is the xvsadm alternative). Hand-written:
# xvsadm parses ipvsadm's popt grammar, not clap's.
_xvsadm() {
    local cur prev
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    case "$prev" in
        -s|--scheduler)
            COMPREPLY=($(compgen -W "rr wrr lc wlc lblc lblcr dh sh sed nq" -- "$cur"))
            return ;;
        --start-daemon|--stop-daemon)
            COMPREPLY=($(compgen -W "master backup" -- "$cur"))
            return ;;
        --on-dead)
            COMPREPLY=($(compgen -W "ipvs expire reassign" -- "$cur"))
            return ;;
        --announce)
            COMPREPLY=($(compgen -W "on off show" -- "$cur"))
            return ;;
        -b|--sched-flags)
            COMPREPLY=($(compgen -W "sh-fallback sh-port" -- "$cur"))
            return ;;
        --mcast-interface)
            COMPREPLY=($(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur"))
            return ;;
        --socket)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        -t|--tcp-service|-u|--udp-service|-r|--real-server|-w|--weight|-x|--u-threshold|\
        -y|--l-threshold|-M|--netmask|--syncid|--sync-maxlen|--mcast-group|--mcast-port|\
        --mcast-ttl|--sync-peer|--bulk-peer)
            return ;;
    esac
    COMPREPLY=($(compgen -W "-A -E -D -C -R -S -a -e -d -L -l -Z -h -v --set
        --add-service --edit-service --delete-service --clear --restore --save
        --add-server --edit-server --delete-server --list --zero --help --version
        --start-daemon --stop-daemon -t -u --tcp-service --udp-service -s --scheduler
        -p --persistent -M --netmask -b --sched-flags -r --real-server -g --gatewaying
        -i --ipip -m --masquerading -w --weight -x --u-threshold -y --l-threshold
        -n --numeric -c --connection --timeout --daemon --stats --rate --thresholds
        --persistent-conn --nosort --sort --exact -X --mcast-interface --syncid
        --sync-maxlen --mcast-group --mcast-port --mcast-ttl --socket --datapath
        --health --reload --announce --on-dead --sync-peer --bulk-peer" -- "$cur"))
}
complete -F _xvsadm xvsadm ipvsadm
