_xvsd() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="xvsd"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        xvsd)
            opts="-i -f -h -V --interface --config --rules --config-test --socket --workers --conn-max --reflect --busy-poll --worker-nice --no-fast-path --fast-path-max --mid-flow --templates-max --table-full --sync-daemon --ready-file --state-dir --restart-hold --bpf-pin-dir --web-listen --announce-dev --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --interface)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -i)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --config)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -f)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rules)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --socket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --workers)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --conn-max)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --worker-nice)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fast-path-max)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --mid-flow)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --templates-max)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --table-full)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sync-daemon)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ready-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --state-dir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --restart-hold)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --bpf-pin-dir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --web-listen)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --announce-dev)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _xvsd -o nosort -o bashdefault -o default xvsd
else
    complete -F _xvsd -o bashdefault -o default xvsd
fi
