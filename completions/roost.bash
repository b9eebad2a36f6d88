# bash completion for roost: commands, options, and the names of images,
# sessions, profiles and generations. Installed as
# /usr/local/share/bash-completion/completions/roost by scripts/install (or
# source this file). What to offer comes from roost itself
# (`roost __complete`), so it always matches the installed command line.

_roost() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    [[ $cur == = ]] && cur=
    local IFS=$'\n'
    local -a reply
    reply=($("${COMP_WORDS[0]}" __complete bash "${COMP_LINE:0:COMP_POINT}" 2>/dev/null)) || return 0
    COMPREPLY=()
    case ${reply[0]} in
        words)
            local word
            for word in "${reply[@]:1}"; do
                COMPREPLY+=("${word%%$'\t'*}")
            done
            ;;
        files)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
            ;;
        dirs)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -d -- "$cur"))
            ;;
        commands)
            COMPREPLY=($(compgen -c -- "$cur"))
            ;;
        users)
            COMPREPLY=($(compgen -u -- "$cur"))
            ;;
        default)
            compopt -o default 2>/dev/null
            ;;
    esac
    return 0
}

complete -F _roost roost
