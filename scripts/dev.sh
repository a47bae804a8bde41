#!/usr/bin/env bash
# Set up (once) and run: `bash scripts/dev.sh demo` or `bash scripts/dev.sh test [pytest args]`.
#
# Set-up is idempotent: a virtual environment in .venv (or $LAVIDA_VENV) with this package
# installed editable and its test extra; it is reinstalled only when pyproject.toml changes.
# The tests also need Debian's chromium (headless, for the preview page): installed with
# apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LAVIDA_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

setup_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.lavida-installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "== installing lavida-data[test] into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    rm -f "$VENV"/.lavida-installed-* && touch "$stamp"
  fi
}

setup_chromium() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    return
  fi
  echo "== installing chromium (Debian package) for the browser tests" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
}

cmd="${1:-}"
shift || true
case "$cmd" in
  demo)
    setup_venv
    out="${LAVIDA_OUT:-out}"
    mkdir -p "$out"
    for mix in examples/mixtures/*.yaml; do
      "$VENV/bin/lavida-data" validate "$mix"
    done
    for mix in examples/mixtures/*.yaml; do
      name="$(basename "$mix" .yaml)"
      "$VENV/bin/lavida-data" preview "$mix" -n 3 --html "$out/preview-$name.html" --json > "$out/preview-$name.json"
    done
    # prepare the demo mixture into MDS shards, then stream tokenized batches from them
    "$VENV/bin/lavida-data" prepare examples/mixtures/demo.yaml --out "$out/prepared" --json > "$out/prepare.json"
    "$VENV/bin/lavida-data" order examples/mixtures/demo.yaml --prepared "$out/prepared" --batch-size 8 -n 16
    "$VENV/bin/lavida-data" stream examples/mixtures/demo.yaml --prepared "$out/prepared" --tiny-tokenizer \
      -n 128 --batch-size 8 --workers 2 --json | tee "$out/stream.json"
    # train stage s2-256 for a few batches with the tiny preset, through Composer's launcher
    "$VENV/bin/lavida-data" prepare examples/stages/mixtures/s2-256.yaml --out "$out/prepared-s2-256" --json \
      > "$out/prepare-s2-256.json"
    rm -rf "$out/train-s2-256"
    "$VENV/bin/composer" -n 1 -m lavida_train.train examples/stages/s2-256.yaml model.preset=tiny \
      "data.prepared=$out/prepared-s2-256" "save_folder=$out/train-s2-256" max_duration=4ba save_interval=4ba \
      global_train_batch_size=2 data.num_workers=1 init_from=null
    tail -n 2 "$out/train-s2-256/metrics.jsonl"
    echo "== demo done: open $out/preview-*.html to look at the samples; shards in $out/prepared;" \
      "training metrics in $out/train-s2-256/metrics.jsonl" >&2
    ;;
  test)
    setup_venv
    setup_chromium
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: bash scripts/dev.sh demo | test [pytest args]" >&2
    exit 2
    ;;
esac
