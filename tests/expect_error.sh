#!/usr/bin/env bash
# Usage: expect_error.sh REGEX CMD... — passes when CMD exits with status 1 or 2 (not a signal or
# crash), prints exactly one line on stderr, and that line matches REGEX (extended grep).
regex=$1; shift
err=$(mktemp)
"$@" >/dev/null 2>"$err"
rc=$?
lines=$(grep -c '' "$err")
msg=$(cat "$err"); rm -f "$err"
if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then echo "FAIL: exit status $rc (want 1 or 2): $msg"; exit 1; fi
if [ "$lines" -ne 1 ]; then echo "FAIL: $lines lines on stderr (want 1): $msg"; exit 1; fi
if ! printf '%s' "$msg" | grep -Eq -- "$regex"; then echo "FAIL: message '$msg' does not match /$regex/"; exit 1; fi
echo "ok: $msg"
