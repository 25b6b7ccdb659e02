#!/usr/bin/env python3
"""Generate the shell completion scripts in completions/ from kling's command tree.

    python scripts/gen_completions.py            # (re)write completions/kling.bash, _kling, kling.fish
    python scripts/gen_completions.py --check    # exit 1, naming the stale files, if they differ

The scripts are static: pressing TAB never runs `kling`, so it is instant. They complete the subcommands
at every level, the options of each command (long and short), the values of Choice options, files or
directories for Path options and for options whose metavar names a path (PATH, FILE, DIR, PATH|URL,
PATH|-), profile names for --profile and PROFILE arguments (`sandbox` and the [profiles.NAME] tables of
config.toml, read at each TAB), and nothing for free text. Hidden commands and options are left out.

The tree is walked generically (groups, commands, parameters), so a new command or option only needs a
re-run of this script; tests/test_completions.py fails while the committed scripts are stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
COMPLETIONS = ROOT / "completions"
PROG = "kling"
GENERATOR = "scripts/gen_completions.py"

# Words of a metavar that name a path: the option's value is completed as a file (or a directory).
_FILE_WORDS = {"PATH", "PATHS", "FILE", "FILES", "FILENAME", "FILENAMES"}
_DIR_WORDS = {"DIR", "DIRS", "DIRECTORY", "DIRECTORIES"}

# What a value completes to.
NONE, FILE, DIR, CHOICE, PROFILE = "none", "file", "dir", "choice", "profile"


@dataclass(frozen=True)
class Value:
    kind: str = NONE
    choices: tuple[str, ...] = ()


@dataclass
class Opt:
    names: list[str]  # every spelling, primary then secondary (e.g. --keep-sound, --no-keep-sound)
    nvalues: int  # 0 for flags and counters
    value: Value
    help: str
    metavar: str
    repeatable: bool  # multiple=True or count=True
    primary: list[str] = field(default_factory=list)  # names that take the value (not --no-x of a flag)


@dataclass
class Arg:
    metavar: str
    nargs: int  # -1: any number
    required: bool
    value: Value


@dataclass
class Cmd:
    path: list[str]
    help: str
    opts: list[Opt]
    args: list[Arg]
    subs: list["Cmd"]
    is_group: bool

    @property
    def key(self) -> str:
        return " ".join(self.path)

    def walk(self):
        yield self
        for sub in self.subs:
            yield from sub.walk()


# --------------------------------------------------------------------------------------------------
# Reading the Click tree


def _short(text: Optional[str], limit: int = 80) -> str:
    """The first sentence of a help text, on one line, at most `limit` characters."""
    if not text:
        return ""
    text = " ".join(text.split("\n\n")[0].split())
    end = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)\.(\s|$)", text)
    if end:
        text = text[:end.start()]
    if len(text) > limit:
        text = text[:limit - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return text


def _metavar_value(metavar: Optional[str]) -> Optional[Value]:
    if not metavar:
        return None
    words = set(re.findall(r"[A-Za-z]+", metavar.upper()))
    if words & _FILE_WORDS:
        return Value(FILE)
    if words & _DIR_WORDS:
        return Value(DIR)
    return None


def _value(param: Any) -> Value:
    if param.name == "profile" or param.metavar == "PROFILE":
        return Value(PROFILE)
    ptype = param.type
    choices = getattr(ptype, "choices", None)
    if choices is not None:
        return Value(CHOICE, tuple(str(getattr(c, "value", c)) for c in choices))
    by_metavar = _metavar_value(param.metavar)
    if by_metavar is not None:
        return by_metavar
    if hasattr(ptype, "file_okay") and hasattr(ptype, "dir_okay"):  # click.Path / typer's Path
        return Value(DIR) if ptype.dir_okay and not ptype.file_okay else Value(FILE)
    if getattr(ptype, "name", None) == "filename":  # click.File
        return Value(FILE)
    return Value(NONE)


def _name_order(name: str) -> tuple[bool, str]:
    return (not name.startswith("--"), name)


def _is_option(param: Any) -> bool:
    return getattr(param, "param_type_name", None) == "option" or hasattr(param, "is_flag")


def _read(command: Any, ctx: Any, path: list[str]) -> Cmd:
    opts: list[Opt] = []
    args: list[Arg] = []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if _is_option(param):
            takes_value = not (param.is_flag or param.count)
            # Long names first, each kind sorted: Click keeps the help option's names in a set.
            primary = sorted(param.opts, key=_name_order)
            names = primary + sorted(param.secondary_opts, key=_name_order)
            opts.append(Opt(
                names=names,
                nvalues=param.nargs if takes_value else 0,
                value=_value(param) if takes_value else Value(NONE),
                help=_short(param.help),
                metavar=(param.metavar or param.name or "VALUE").upper() if takes_value else "",
                repeatable=bool(param.multiple or param.count),
                primary=primary,
            ))
        else:
            args.append(Arg(
                metavar=(param.metavar or param.name or "ARG").upper(),
                nargs=param.nargs,
                required=bool(param.required),
                value=_value(param),
            ))
    subs: list[Cmd] = []
    is_group = hasattr(command, "list_commands")
    if is_group:
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            subs.append(_read(sub, _context(sub, name, ctx), path + [name]))
    return Cmd(path=path, help=_short(command.short_help or command.help), opts=opts, args=args, subs=subs,
               is_group=is_group)


def _context(command: Any, name: str, parent: Any = None) -> Any:
    from typer._click.core import Context

    return Context(command, info_name=name, parent=parent, **(command.context_settings or {}))


def read_command(command: Any, name: str = PROG) -> Cmd:
    """The completion model of any Click command or group (e.g. `typer.main.get_command(app)`)."""
    return _read(command, _context(command, name), [name])


def read_tree() -> Cmd:
    """kling's command tree, as this module needs it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import typer

    from kling_cli.cli import app  # imports every command module, so the tree is complete

    return read_command(typer.main.get_command(app))


# --------------------------------------------------------------------------------------------------
# Shared bits

_INSTALL = {
    "bash": [
        "Install (bash 3.2 or later):",
        "  for this shell:   source completions/kling.bash",
        "  for every shell:  add `source /path/to/kling-cli/completions/kling.bash` to ~/.bashrc, or copy",
        "                    it to ~/.local/share/bash-completion/completions/kling (bash-completion loads it)",
    ],
    "zsh": [
        "Install: copy this file, named _kling, into a directory on $fpath, then restart zsh, e.g.",
        "  mkdir -p ~/.zfunc && cp completions/_kling ~/.zfunc/",
        "  and in ~/.zshrc, before `compinit`:  fpath=(~/.zfunc $fpath); autoload -Uz compinit; compinit",
        "(if completion seems stale afterwards: rm -f ~/.zcompdump*; exec zsh)",
    ],
    "fish": [
        "Install: copy this file to ~/.config/fish/completions/kling.fish",
        "  mkdir -p ~/.config/fish/completions && cp completions/kling.fish ~/.config/fish/completions/",
        "(or `source completions/kling.fish` for the current shell only)",
    ],
}


def _header(shell: str) -> str:
    lines = [
        f"{shell} completion for `{PROG}` (kling-cli).",
        "",
        f"GENERATED by {GENERATOR} from the kling command tree: DO NOT EDIT.",
        f"Regenerate with `python {GENERATOR}` after changing a command or an option.",
        "",
        *_INSTALL[shell],
    ]
    return "\n".join(("# " + line).rstrip() for line in lines) + "\n"


def _sq(text: str) -> str:
    """A POSIX-shell single-quoted word (bash, zsh)."""
    return "'" + text.replace("'", "'\\''") + "'"


def _bash_word(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_./:@%+=,-]+", text) else _sq(text)


def _positional_slots(cmd: Cmd) -> tuple[list[Value], bool]:
    """The value of each positional word of a command, and whether the last one repeats."""
    slots: list[Value] = []
    for arg in cmd.args:
        if arg.nargs < 0:
            return slots + [arg.value], True
        slots.extend([arg.value] * max(arg.nargs, 1))
    return slots, False


# --------------------------------------------------------------------------------------------------
# bash

_BASH_RUNTIME = r'''
# Appends to COMPREPLY the words (after the first argument) that start with the first argument.
_kling_filter() {
    local cur=$1 word
    shift
    for word in "$@"; do
        [[ $word == "$cur"* ]] && COMPREPLY+=("$word")
    done
}

_kling_files() {
    local word
    compopt -o filenames 2>/dev/null
    while IFS= read -r word; do COMPREPLY+=("$word"); done < <(compgen -f -- "$1")
}

_kling_dirs() {
    local word
    compopt -o filenames 2>/dev/null
    while IFS= read -r word; do COMPREPLY+=("$word"); done < <(compgen -d -- "$1")
}

# Profile names: the built-in sandbox and the [profiles.NAME] tables of config.toml (a file read, no kling run).
_kling_profiles() {
    local dir=${KLING_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/kling} line
    local plain='^\[profiles\.([A-Za-z0-9_-]+)\][[:space:]]*$' quoted='^\[profiles\."([^"]+)"\][[:space:]]*$'
    local -a names=(sandbox)
    [[ -r $dir/config.toml ]] || dir="$HOME/Library/Application Support/kling"
    if [[ -r $dir/config.toml ]]; then
        while IFS= read -r line; do
            if [[ $line =~ $plain || $line =~ $quoted ]]; then
                names+=("${BASH_REMATCH[1]}")
            fi
        done < "$dir/config.toml"
    fi
    _kling_filter "$1" "${names[@]}"
}

# bash splits words at the characters of COMP_WORDBREAKS (= and : among them) and readline replaces
# only the text after the last of them: drop that part of the word from each reply.
_kling_ltrim() {
    local cur=$1 k c i prefix
    for ((k = ${#cur} - 1; k >= 0; k--)); do
        c=${cur:k:1}
        if [[ ($c == "=" || $c == ":") && ${COMP_WORDBREAKS-} == *"$c"* ]]; then
            break
        fi
    done
    ((k < 0)) && return 0
    prefix=${cur:0:k+1}
    for i in "${!COMPREPLY[@]}"; do
        COMPREPLY[i]=${COMPREPLY[i]#"$prefix"}
    done
}

_kling() {
    COMPREPLY=()
    # The words up to the cursor, with the ones bash split at '=' or ':' joined again.
    local -a words=()
    local i w n=0 cword=0 join=0
    for ((i = 0; i <= COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]-}
        if ((n > 1)) && [[ -n $w && -z ${w//[=:]/} ]]; then
            words[n - 1]+=$w
            join=1
        elif ((join)) && [[ -n $w ]]; then
            words[n - 1]+=$w
            join=0
        else
            words[n]=$w
            n=$((n + 1))
            join=0
        fi
        ((i == COMP_CWORD)) && cword=$((n - 1))
    done

    # Follow the subcommands typed so far, skipping option values; count the positional words.
    local cur=${words[cword]} path=kling opt= expect=0 pos=0 dashdash=0 j c
    local -a _kling_subs=() _kling_opts=()
    local _kling_vopts=" " _kling_nvals=" " _kling_nargs=0 _kling_varargs=0
    _kling_info "$path"
    for ((i = 1; i < cword; i++)); do
        w=${words[i]}
        if ((expect > 0)); then
            expect=$((expect - 1))
            continue
        fi
        if ((!dashdash)) && [[ $w == -?* ]]; then
            if [[ $w == -- ]]; then
                dashdash=1
            elif [[ $w == --* ]]; then
                [[ $w != *=* && $_kling_vopts == *" $w "* ]] && opt=$w && expect=1
            elif [[ $_kling_vopts == *" $w "* ]]; then
                opt=$w
                expect=1
            else
                # -abc: flags, the first one taking a value takes the rest of the word (or the next word)
                for ((j = 1; j < ${#w}; j++)); do
                    c=-${w:j:1}
                    if [[ $_kling_vopts == *" $c "* ]]; then
                        ((j == ${#w} - 1)) && opt=$c && expect=1
                        break
                    fi
                done
            fi
            if ((expect)) && [[ $_kling_nvals == *" $opt:"* ]]; then
                expect=${_kling_nvals#*" $opt:"}
                expect=${expect%% *}
            fi
            continue
        fi
        if ((${#_kling_subs[@]})) && [[ " ${_kling_subs[*]} " == *" $w "* ]]; then
            path="$path $w"
            pos=0
            dashdash=0
            _kling_subs=() _kling_opts=() _kling_vopts=" " _kling_nvals=" " _kling_nargs=0 _kling_varargs=0
            _kling_info "$path"
            continue
        fi
        pos=$((pos + 1))
    done

    if ((expect > 0)); then
        _kling_values "$path" "$opt" "$cur"
    elif ((!dashdash)) && [[ $cur == -* ]]; then
        if [[ $cur == --*=* ]]; then
            opt=${cur%%=*}
            if [[ $_kling_vopts == *" $opt "* ]]; then
                _kling_values "$path" "$opt" "${cur#*=}"
                for i in "${!COMPREPLY[@]}"; do COMPREPLY[i]="$opt=${COMPREPLY[i]}"; done
            fi
        else
            _kling_filter "$cur" "${_kling_opts[@]}"
        fi
    elif ((${#_kling_subs[@]})); then
        _kling_filter "$cur" "${_kling_subs[@]}"
    elif ((pos < _kling_nargs)); then
        _kling_values "$path" "#$pos" "$cur"
    elif ((_kling_varargs && _kling_nargs > 0)); then
        _kling_values "$path" "#$((_kling_nargs - 1))" "$cur"
    elif [[ -z $cur ]]; then
        _kling_filter "$cur" "${_kling_opts[@]}"
    fi
    _kling_ltrim "$cur"
    return 0
}

complete -F _kling kling
'''


def render_bash(tree: Cmd) -> str:
    out = [_header("bash"), "# shellcheck shell=bash disable=SC2034", ""]

    out += [
        "# Sets, for one command path: its subcommands, its options, those taking a value (with their",
        "# number of values when not 1) and its positional words (how many; 1 if the last one repeats).",
        "_kling_info() {",
        '    case "$1" in',
    ]
    for cmd in tree.walk():
        out.append(f"        {_sq(cmd.key)})")
        if cmd.subs:
            out.append("            _kling_subs=(" + " ".join(_bash_word(s.path[-1]) for s in cmd.subs) + ")")
        names = [name for opt in cmd.opts for name in opt.names]
        out.append("            _kling_opts=(" + " ".join(_bash_word(n) for n in names) + ")")
        vnames = [name for opt in cmd.opts if opt.nvalues for name in opt.primary]
        if vnames:
            out.append("            _kling_vopts=" + _sq(" " + " ".join(vnames) + " "))
        multi = [f"{name}:{opt.nvalues}" for opt in cmd.opts if opt.nvalues > 1 for name in opt.primary]
        if multi:
            out.append("            _kling_nvals=" + _sq(" " + " ".join(multi) + " "))
        slots, varargs = _positional_slots(cmd)
        if slots and not cmd.is_group:
            out.append(f"            _kling_nargs={len(slots)}")
            if varargs:
                out.append("            _kling_varargs=1")
        out.append("            ;;")
    out += ["    esac", "}", ""]

    # Values: one case branch per distinct completion, listing every (path, option) that uses it.
    branches: dict[Value, list[str]] = {}
    for cmd in tree.walk():
        for opt in cmd.opts:
            if opt.nvalues and opt.value.kind != NONE:
                for name in opt.primary:
                    branches.setdefault(opt.value, []).append(f"{cmd.key} {name}")
        if not cmd.is_group:
            for index, value in enumerate(_positional_slots(cmd)[0]):
                if value.kind != NONE:
                    branches.setdefault(value, []).append(f"{cmd.key} #{index}")
    out += [
        "# Completes the value of an option, or a positional word (#N), of a command path.",
        "# Usage: _kling_values PATH OPTION-OR-#N TYPED",
        "_kling_values() {",
        '    case "$1 $2" in',
    ]
    for value, keys in branches.items():
        out.append("        " + "|".join(_sq(k) for k in keys) + ")")
        if value.kind == CHOICE:
            out.append('            _kling_filter "$3" ' + " ".join(_sq(c) for c in value.choices))
        elif value.kind == PROFILE:
            out.append('            _kling_profiles "$3"')
        elif value.kind == FILE:
            out.append('            _kling_files "$3"')
        else:
            out.append('            _kling_dirs "$3"')
        out.append("            ;;")
    out += ["    esac", "}"]
    return "\n".join(out) + "\n" + _BASH_RUNTIME


# --------------------------------------------------------------------------------------------------
# zsh


def _zsh_escape(text: str, specials: str) -> str:
    return "".join("\\" + ch if ch in specials else ch for ch in text)


def _zsh_action(value: Value) -> str:
    if value.kind == PROFILE:
        return "_kling_profiles"
    if value.kind == FILE:
        return "_files"
    if value.kind == DIR:
        return "_files -/"
    if value.kind == CHOICE:
        return "(" + " ".join(
            "".join(ch if re.match(r"[A-Za-z0-9_.,/+@%=-]", ch) else "\\" + ch for ch in c) for c in value.choices
        ) + ")"
    return " "


def _zsh_option_specs(opt: Opt) -> list[str]:
    desc = "[" + _zsh_escape(opt.help, "\\[]:") + "]" if opt.help else ""
    exclusive = "" if opt.repeatable or len(opt.names) == 1 else "(" + " ".join(opt.names) + ")"
    prefix = "*" if opt.repeatable else ""
    specs = []
    for name in opt.names:
        spec = _zsh_escape(name, "\\[]:=+")
        if opt.nvalues and name in opt.primary:
            spec += "+" if len(name) == 2 and not name.startswith("--") else "="
            spec += desc
            message = _zsh_escape(opt.metavar, "\\:")
            spec += f":{message}:{_zsh_action(opt.value)}" * opt.nvalues
        else:
            spec += desc
        specs.append(exclusive + prefix + spec)
    return specs


def _zsh_function(cmd: Cmd) -> str:
    return "_kling_cmd" + "".join("__" + re.sub(r"[^A-Za-z0-9]", "_", part) for part in cmd.path[1:])


_ZSH_PROFILES = r'''# Profile names: the built-in sandbox and the [profiles.NAME] tables of config.toml (read, no kling run).
_kling_profiles() {
    local dir=${KLING_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/kling}
    local -a names
    names=(sandbox)
    [[ -r $dir/config.toml ]] || dir="$HOME/Library/Application Support/kling"
    if [[ -r $dir/config.toml ]]; then
        names+=(${(f)"$(sed -n -e 's/^\[profiles\.\([A-Za-z0-9_-]*\)\][[:space:]]*$/\1/p' \
            -e 's/^\[profiles\."\([^"]*\)"\][[:space:]]*$/\1/p' "$dir/config.toml")"})
    fi
    compadd -a names
}
'''


def render_zsh(tree: Cmd) -> str:
    out = ["#compdef kling", "", _header("zsh"), _ZSH_PROFILES]
    for cmd in tree.walk():
        specs = [spec for opt in cmd.opts for spec in _zsh_option_specs(opt)]
        out.append(f"{_zsh_function(cmd)}() {{")
        if cmd.subs:
            out.append("    local curcontext=$curcontext state state_descr line ret=1")
            out.append("    typeset -A opt_args")
            lines = [_sq(spec) for spec in specs] + ["'1: :->command'", "'*:: :->argument'"]
            out.append("    _arguments -C -s -S : \\")
            out.extend(f"        {line} \\" for line in lines[:-1])
            out.append(f"        {lines[-1]} && ret=0")
            out.append("    case $state in")
            out.append("        (command)")
            out.append("            local -a commands")
            out.append("            commands=(")
            for sub in cmd.subs:
                entry = _zsh_escape(sub.path[-1], "\\:") + (":" + sub.help if sub.help else "")
                out.append(f"                {_sq(entry)}")
            out.append("            )")
            title = " ".join(cmd.path)
            out.append(f"            _describe -t commands {_sq(title + ' command')} commands && ret=0")
            out.append("            ;;")
            out.append("        (argument)")
            out.append('            curcontext=${curcontext%:*:*}:' + "-".join(cmd.path) + "-$words[1]:")
            out.append("            case $words[1] in")
            for sub in cmd.subs:
                out.append(f"                ({_zsh_escape(sub.path[-1], ' ()|*?[]<>~#')}) "
                           f"{_zsh_function(sub)} && ret=0 ;;")
            out.append("            esac")
            out.append("            ;;")
            out.append("    esac")
            out.append("    return ret")
        else:
            lines = [_sq(spec) for spec in specs]
            slots = []
            for arg in cmd.args:
                message = _zsh_escape(arg.metavar, "\\:")
                action = _zsh_action(arg.value)
                if arg.nargs < 0:
                    slots.append(f"*:{message}:{action}")
                    break
                for _ in range(max(arg.nargs, 1)):
                    slots.append(f"{len(slots) + 1}:{'' if arg.required else ':'}{message}:{action}")
            lines += [_sq(slot) for slot in slots]
            if lines:
                out.append("    _arguments -s -S : \\")
                out.extend(f"        {line} \\" for line in lines[:-1])
                out.append(f"        {lines[-1]}")
            else:
                out.append("    _message 'no more arguments'")
        out.append("}")
        out.append("")
    out += [
        'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then',
        '    # autoloaded from $fpath',
        f'    {_zsh_function(tree)} "$@"',
        "else",
        "    # sourced",
        f"    compdef {_zsh_function(tree)} kling",
        "fi",
    ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------
# fish


def _fq(text: str) -> str:
    """A fish single-quoted word."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_item(text: str) -> str:
    """One word of a `complete -a` list (which fish splits and expands)."""
    return "".join(ch if re.match(r"[A-Za-z0-9_.,/+@%=:-]", ch) else "\\" + ch for ch in text)


_FISH_RUNTIME = r'''
# The command path (e.g. "kling submit t2v") the cursor is in: the subcommands typed so far.
function __kling_path
    set -l line (commandline -pc | string collect)
    if test "$line" = "$__kling_cached_line"
        echo $__kling_cached_path
        return
    end
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l path kling
    set -l expect 0
    set -l dashdash 0
    for tok in $tokens
        if test $expect -gt 0
            set expect (math $expect - 1)
            continue
        end
        if test $dashdash = 0; and string match -qr -- '^-.' $tok
            if test $tok = --
                set dashdash 1
            else if not string match -q -- '*=*' $tok
                # an option taking N values is listed N times
                for name in (__kling_value_options $path)
                    test "$name" = "$tok"; and set expect (math $expect + 1)
                end
            end
            continue
        end
        if contains -- $tok (__kling_subcommands $path)
            set path "$path $tok"
            set dashdash 0
        end
    end
    set -g __kling_cached_line $line
    set -g __kling_cached_path $path
    echo $path
end

# Profile names: the built-in sandbox and the [profiles.NAME] tables of config.toml (a file read, no kling run).
function __kling_profiles
    set -l dir $KLING_CONFIG_DIR
    if test -z "$dir"
        set dir $HOME/.config/kling
        set -q XDG_CONFIG_HOME; and set dir $XDG_CONFIG_HOME/kling
    end
    test -r $dir/config.toml; or set dir "$HOME/Library/Application Support/kling"
    echo sandbox
    if test -r $dir/config.toml
        string replace -rf '^\[profiles\.([A-Za-z0-9_-]+)\]\s*$' '$1' <$dir/config.toml
        string replace -rf '^\[profiles\."([^"]+)"\]\s*$' '$1' <$dir/config.toml
    end
end

# True when the cursor is in the command path given as arguments.
function __kling_at
    test (__kling_path) = "$argv"
end

complete -c kling -f
'''


def render_fish(tree: Cmd) -> str:
    out = [_header("fish")]
    out += ["function __kling_subcommands", "    switch $argv[1]"]
    for cmd in tree.walk():
        if cmd.subs:
            out.append(f"        case {_fq(cmd.key)}")
            out.append("            printf '%s\\n' " + " ".join(_fq(s.path[-1]) for s in cmd.subs))
    out += ["    end", "end", ""]
    out += ["function __kling_value_options", "    switch $argv[1]"]
    for cmd in tree.walk():
        names = [name for opt in cmd.opts if opt.nvalues for name in opt.primary * opt.nvalues]
        if names:
            out.append(f"        case {_fq(cmd.key)}")
            out.append("            printf '%s\\n' " + " ".join(_fq(n) for n in names))
    out += ["    end", "end"]
    out.append(_FISH_RUNTIME)

    for cmd in tree.walk():
        condition = "-n " + _fq("__kling_at " + " ".join(_fish_item(p) for p in cmd.path))
        out.append(f"# {cmd.key}")
        for sub in cmd.subs:
            line = f"complete -c kling {condition} -a {_fq(_fish_item(sub.path[-1]))}"
            if sub.help:
                line += f" -d {_fq(sub.help)}"
            out.append(line)
        for opt in cmd.opts:
            parts = ["complete -c kling", condition]
            for name in opt.names:
                if name.startswith("--"):
                    parts.append(f"-l {_fq(name[2:])}")
                elif len(name) == 2:
                    parts.append(f"-s {_fq(name[1:])}")
                else:
                    parts.append(f"-o {_fq(name[1:])}")
            if opt.nvalues:
                parts += _fish_value(opt.value)
            if opt.help:
                parts.append(f"-d {_fq(opt.help)}")
            out.append(" ".join(parts))
        if not cmd.is_group:
            for value in dict.fromkeys(arg.value for arg in cmd.args if arg.value.kind != NONE):
                # a positional word: no -r/-x (those are about an option's value)
                words = [w for w in _fish_value(value) if w not in ("-r", "-x")]
                out.append(" ".join(["complete -c kling", condition] + words))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _fish_value(value: Value) -> list[str]:
    if value.kind == PROFILE:
        return ["-x", "-a", _fq("(__kling_profiles)")]
    if value.kind == FILE:
        return ["-r", "-F"]
    if value.kind == DIR:
        return ["-x", "-a", _fq("(__fish_complete_directories (commandline -ct))")]
    if value.kind == CHOICE:
        return ["-x", "-a", _fq(" ".join(_fish_item(c) for c in value.choices))]
    return ["-x"]


# --------------------------------------------------------------------------------------------------


def generate(tree: Optional[Cmd] = None) -> dict[str, str]:
    """File name (in completions/) -> content."""
    tree = tree or read_tree()
    return {"kling.bash": render_bash(tree), "_kling": render_zsh(tree), "kling.fish": render_fish(tree)}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a committed script differs from what would be generated")
    parser.add_argument("--output-dir", type=Path, default=COMPLETIONS, help="default: completions/ of the repo")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        stale = []
        for name, text in files.items():
            target = args.output_dir / name
            current = target.read_text(encoding="utf-8") if target.is_file() else None
            if current != text:
                stale.append(name)
                print(f"{target}: {'missing' if current is None else 'stale'}", file=sys.stderr)
        if stale:
            print(f"run `python {GENERATOR}` to regenerate", file=sys.stderr)
            return 1
        print("completions are up to date")
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        target = args.output_dir / name
        with open(target, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
