#!/usr/bin/env bash
# Progress and output (issue 13): the progress line of long passes appears on
# a terminal's stderr only (a real pty, util-linux script), never in a pipe
# or a log file; each long pass leaves one summary line with seconds in the
# log; status colours what needs attention on a terminal only, as
# --color and NO_COLOR say.
source "$(dirname "$0")/lib.bash"

P=$POL/ok_basic.lua
mkdir -p "$CERTMAINT_DATA"
unset NO_COLOR
# under a pty: stdout and stderr both the terminal, exit status kept (-e)
on_tty() { script -qec "$*" /dev/null; }
# has FILE LUA_PATTERN / lacks: plain Lua patterns over the raw bytes
has() { lua54 -e "local f = assert(io.open('$1', 'rb')); local s = f:read('a'); os.exit(s:find('$2') and 0 or 1)"; }
lacks() { ! has "$@"; }
ESC=$'\033'

set +e; on_tty "$BIN once $P" >"$WORK/tty.out"; rc=$?; set -e
check "once on a terminal: exit 0" test $rc -eq 0
check "terminal: the load's progress line, rewritten in place" has "$WORK/tty.out" '\rloading certificates 2/2 %(100%%%), %d+s\27%[K'
check "terminal: the first issuance's progress line" has "$WORK/tty.out" '\robtaining certificates [0-2]/2 %([0-9]+%%%)'
check "terminal: log lines are written on a clean line, never after a progress text" \
  lacks "$WORK/tty.out" 's\27%[Kts='
# the last thing drawn is erased before the command's summary on stdout
check "terminal: the line is erased when the pass ends" \
  lua54 -e "local s = assert(io.open('$WORK/tty.out', 'rb')):read('a')
    local last_draw = 0
    for p in s:gmatch('()certificates %d+/%d+') do last_draw = p end
    local erase = s:find('\r\27[K', last_draw, true)
    local summary = s:find('loaded 0, obtained 2', 1, true)
    os.exit(last_draw > 0 and erase and summary and erase < summary and 0 or 1)"

rm -rf "$CERTMAINT_DATA"; mkdir -p "$CERTMAINT_DATA"
set +e; "$BIN" once "$P" >"$WORK/pipe.out" 2>&1 | cat; "$BIN" once "$P" 2>&1 | cat >"$WORK/pipe2.out"; set -e
"$BIN" once "$P" >"$WORK/file.out" 2>"$WORK/file.log"
for f in pipe2.out file.log; do
  check "$f: no progress line (no CR, no escape, no 'loading certificates')" \
    bash -c "! grep -q \$'\r' '$WORK/$f' && ! grep -q '$ESC' '$WORK/$f' && ! grep -q 'loading certificates' '$WORK/$f'"
done
check "stderr in a file under a terminal's stdout: still no progress line" \
  bash -c "script -qec \"'$BIN' once '$P' 2>'$WORK/tty_err.log'\" /dev/null >/dev/null && ! grep -q \$'\r' '$WORK/tty_err.log' && ! grep -q 'certificates [0-9]*/' '$WORK/tty_err.log'"
check "log: the load's summary line, with seconds" grep -Eq 'event=loaded certificates=2 errors=0 missing=0 names_changed=0 seconds=[0-9.]+$' "$WORK/file.log"
check "log: start-up's summary line" grep -Eq 'event=started deploy_failed=0 deployed=0 failed=0 loaded=2 obtained=0 seconds=[0-9.]+$' "$WORK/file.log"
for k in renew ocsp clean; do
  check "log: the $k pass's summary line has seconds" grep -Eq "event=tick .*kind=$k .*seconds=[0-9.]+( |$)" "$WORK/file.log"
done
check "log: one summary line per pass" test "$(grep -c 'event=tick' "$WORK/file.log")" -eq 3
rm -rf "$CERTMAINT_DATA"; mkdir -p "$CERTMAINT_DATA"
"$BIN" once "$P" >/dev/null 2>"$WORK/first.log"
check "log: the first issuance counted in start-up's line" grep -Eq 'event=started .*failed=0 .*obtained=2 seconds=' "$WORK/first.log"

# status: one certificate missing from storage (red), one due now (yellow)
cat >"$WORK/due.lua" <<POL
local certmaint = require "certmaint"
return certmaint.policy {
  storage = certmaint.storage.file { root = os.getenv("CERTMAINT_DATA") },
  issuer = certmaint.issuer.internal { lifetime = "1h" },
  certificates = { "example.test", { "www.example.test", "api.example.test" }, "missing.test" },
  renewal_window_ratio = 0.9999,
}
POL
RED="$ESC[31m"; YELLOW="$ESC[33m"
on_tty "$BIN status $WORK/due.lua" >"$WORK/st_tty.out"
check "status on a terminal: the missing certificate's row in red" \
  grep -Fq "${RED}missing.test" "$WORK/st_tty.out"
check "status on a terminal: a renewal due now in yellow" grep -Fq "${YELLOW}now" "$WORK/st_tty.out"
check "status on a terminal: a healthy cell is not painted" \
  bash -c "grep -F 'example.test ' '$WORK/st_tty.out' | grep -q 'certmaint Local Authority' && ! grep -Fq '${ESC}[31mcertmaint' '$WORK/st_tty.out'"
"$BIN" status "$WORK/due.lua" | cat >"$WORK/st_pipe.out"
check "status in a pipe: no colour" bash -c "grep -q missing.test '$WORK/st_pipe.out' && ! grep -q '$ESC' '$WORK/st_pipe.out'"
# LEFT counts seconds, so the two runs may straddle a second: durations are
# replaced by one placeholder on both sides
check "status in a pipe: the same table, uncoloured" \
  bash -c "diff <(sed -e 's/\r[^\r]*\x1b\[K//g' -e 's/\x1b\[[0-9;]*m//g' -e 's/\r//g' -e 's/ [0-9][0-9dhms]*s / DURATION /g' '$WORK/st_tty.out') <(sed -e 's/ [0-9][0-9dhms]*s / DURATION /g' '$WORK/st_pipe.out') >/dev/null"
NO_COLOR=1 script -qec "'$BIN' status '$WORK/due.lua'" /dev/null >"$WORK/st_nc.out"
check "NO_COLOR on a terminal: no colour" bash -c "grep -q missing.test '$WORK/st_nc.out' && ! grep -q '$ESC\[3' '$WORK/st_nc.out'"
NO_COLOR= script -qec "'$BIN' status '$WORK/due.lua'" /dev/null >"$WORK/st_nce.out"
check "NO_COLOR empty: colour as without it" grep -Fq "${RED}missing.test" "$WORK/st_nce.out"
NO_COLOR=1 script -qec "'$BIN' status '$WORK/due.lua' --color=always" /dev/null >"$WORK/st_nca.out"
check "--color=always wins over NO_COLOR" grep -Fq "${RED}missing.test" "$WORK/st_nca.out"
on_tty "$BIN status $WORK/due.lua --color=never" >"$WORK/st_never.out"
check "--color=never on a terminal: no colour" bash -c "! grep -q '$ESC\[3' '$WORK/st_never.out'"
"$BIN" status "$WORK/due.lua" --color=always >"$WORK/st_always.out"
check "--color=always in a file: colour" grep -Fq "${RED}missing.test" "$WORK/st_always.out"
"$BIN" status "$WORK/due.lua" --color >"$WORK/st_bare.out"
check "--color alone is always" grep -Fq "${RED}missing.test" "$WORK/st_bare.out"
on_tty "$BIN status $WORK/due.lua --json" >"$WORK/st_json.out"
check "--json on a terminal: never coloured" bash -c "grep -q '\"names\"' '$WORK/st_json.out' && ! grep -q '$ESC\[3' '$WORK/st_json.out'"
set +e; "$BIN" status "$WORK/due.lua" --color=sometimes >/dev/null 2>"$WORK/st_bad.err"; rc=$?; set -e
check "--color=sometimes: exit 2, saying what it takes" \
  bash -c "[ $rc -eq 2 ] && grep -q 'color must be auto, always or never' '$WORK/st_bad.err'"
finish
