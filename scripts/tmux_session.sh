#!/usr/bin/env bash
# Drive the real terminal app in a real terminal (tmux) as a newcomer would: setup (an unknown hub model is
# flagged, ctrl+n through the tabs) → run → cancel → ctrl+r offers resume → results, export, inspect, help,
# on the embedded model smollm2-135m with a small plan, saving what the screen shows (tmux capture-pane).
#
#   scripts/tmux_session.sh OUT_DIR            # 80×24, the smallest size the app must be usable at
#   COLS=200 ROWS=50 scripts/tmux_session.sh OUT_DIR
#
# Needs tmux: if it is missing, the script installs it with apt-get (as root or through sudo). It runs
# offline (the embedded model ships in a pip package); the first use of the model de-quantises it once
# (~20 s), later runs load it from the cache in seconds. Sessions are written to a scratch folder, not
# to the repository. Every capture is saved twice: NN-name.txt (plain text) and NN-name.ansi (with colours,
# `cat` it in a terminal).
set -euo pipefail

OUT=${1:?usage: scripts/tmux_session.sh OUT_DIR}
COLS=${COLS:-80}
ROWS=${ROWS:-24}
TIMEOUT=${TIMEOUT:-900}  # seconds the run may take
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORKBENCH="$REPO/.venv/bin/workbench"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if ! command -v tmux >/dev/null 2>&1; then
  echo "tmux_session: tmux is missing; installing it with apt-get" >&2
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq tmux >/dev/null
fi
[ -x "$WORKBENCH" ] || { echo "tmux_session: $WORKBENCH is missing; run scripts/setup.sh first" >&2; exit 2; }

WORK=$(mktemp -d -t workbench-tmux-XXXXXX)
SESSION="workbench-$$"
TMUX_SOCKET="workbench-walk-$$"  # a tmux server of its own: other tmux sessions on the machine are never touched
tmux() { command tmux -L "$TMUX_SOCKET" "$@"; }
# A small plan: two samples of 256 context tokens + 32 scored, three presses and a prompt compressor at two
# rates (9 cells).
cat > "$WORK/small.json" <<'JSON'
{
  "name": "tmux-small",
  "description": "small plan for the tmux walk-through: 3 presses × 2 rates on the embedded model",
  "model": "smollm2-135m",
  "datasets": [{"name": "wikitext2", "samples": 2, "seed": 0}],
  "protocol": {"name": "context-continuation", "context_tokens": 256, "continuation_tokens": 32},
  "rates": [0.5, 0.25],
  "methods": ["knorm", "streaming-llm", "snapkv", {"name": "random", "family": "prompt"}]
}
JSON

cleanup() { tmux kill-server 2>/dev/null || true; }
trap cleanup EXIT

N=0
capture() {  # capture NAME: the visible screen, as text and with colours
  N=$((N + 1))
  local name
  name=$(printf "%02d-%s" "$N" "$1")
  tmux capture-pane -p -t "$SESSION" > "$OUT/$name.txt"
  tmux capture-pane -p -e -t "$SESSION" > "$OUT/$name.ansi"
  echo "captured $name" >&2
}

wait_for() {  # wait_for TEXT SECONDS [grep option]: until TEXT (-F: a string; -E: a regex) is on the screen
  local deadline=$((SECONDS + $2))
  until tmux capture-pane -p -t "$SESSION" | grep -q "${3:--F}" -- "$1"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "tmux_session: '$1' did not appear within $2 s; the screen shows:" >&2
      tmux capture-pane -p -t "$SESSION" >&2
      capture "timeout"
      exit 1
    fi
    sleep 0.5
  done
}

keys() { tmux send-keys -t "$SESSION" "$@"; sleep 0.6; }

START=$(date +%s%N)
tmux new-session -d -s "$SESSION" -x "$COLS" -y "$ROWS" -c "$WORK" "'$WORKBENCH'; sleep 3600"
wait_for "Plan name" 30
echo "first frame seen after $(( ($(date +%s%N) - START) / 1000000 )) ms (tmux start and 0.5 s polling included)" >&2
wait_for "cells" 30
capture "setup-quickstart"

# Setup: a hub id that is not cached (offline) is flagged in place before anything runs.
tmux send-keys -t "$SESSION" Tab Tab Tab Tab Tab  # nothing focused at first: tabs, preset, Load file, Plan name, Model
keys C-a C-k
tmux send-keys -t "$SESSION" -l "nonexistent-org/no-such-model"
wait_for "not in the local" 20
capture "setup-unknown-model"
keys C-r  # refused on Setup: the run would fail on loading
capture "setup-unknown-model-ctrl-r"
keys C-a C-k
tmux send-keys -t "$SESSION" -l "smollm2-135m"
wait_for "✓ embedded" 10

# Setup: load the small plan from a file (ctrl+l opens the dialog), then every tab with ctrl+n.
keys C-l
wait_for "Load a plan into Setup" 10
tmux send-keys -t "$SESSION" -l "$WORK/small.json"
keys Enter
wait_for "tmux-small:" 10
sleep 3.5  # let the "plan loaded" notification pass
capture "setup-plan"
keys C-n
capture "setup-datasets"
keys C-n
capture "setup-methods"
keys Down Down Down
keys C-n  # from inside the methods list
capture "setup-rates"

# Run: ctrl+r starts the worker; the progress view follows it. Escape cancels after the first samples.
keys C-r
wait_for "running" 20
capture "run-loading"
wait_for " [1-9][0-9]*/[0-9]+ samples" "$TIMEOUT" -E  # the first sample is done
sleep 2
capture "run-progress"
keys Escape
wait_for "cancelled after" 120
sleep 6.5
capture "run-cancelled"
keys C-r  # a cancelled session: resume or start fresh?
wait_for "Resume" 10
capture "resume-offer"
keys r
wait_for "finished in" "$TIMEOUT"
sleep 6.5  # the "run finished" notification passes
capture "run-finished"

# Results: the table, the plots, the export dialog (rows in the order shown; JSON offers a new name).
keys F4
capture "results-table"
keys p
capture "results-plots"
keys C-e
wait_for "Export results" 10
capture "export"
keys Escape
keys F6
capture "inspect"
keys F1
capture "help"
keys Escape

keys C-q
sleep 1
ls "$WORK/sessions" > "$OUT/sessions.txt"
echo "tmux_session: captures in $OUT; the session file: $(cat "$OUT/sessions.txt")" >&2
