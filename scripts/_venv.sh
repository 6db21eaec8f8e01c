# Sourced by scripts/serve and scripts/test: the shared .venv set-up.
# ensure_venv EXTRA: .venv exists and `pip install -e .[EXTRA]` was done for this pyproject.toml.
ensure_venv() {
  local extra=$1 py stamp want
  if [[ ! -x .venv/bin/pip ]]; then
    py=$(command -v python3.11 || command -v python3) || { echo "$(basename "$0"): no python3 found" >&2; exit 1; }
    echo "$(basename "$0"): creating .venv with $py" >&2
    if ! "$py" -m venv .venv 2>/dev/null; then
      # Debian ships venv/ensurepip separately; a failed attempt leaves a .venv without pip.
      rm -rf .venv
      if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "$(basename "$0"): installing python3-venv" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$py" -m venv .venv
      else
        echo "$(basename "$0"): '$py -m venv' failed; install python3-venv (as root: apt-get install -y python3-venv)" >&2
        exit 1
      fi
    fi
  fi
  # The stamp records what was installed; an editable install picks up code changes by itself,
  # only dependency/entry-point changes (pyproject.toml) need pip again.
  stamp=.venv/.installed-$extra
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
    echo "$(basename "$0"): pip install -e '.[$extra]'" >&2
    .venv/bin/pip install -q --disable-pip-version-check -e ".[$extra]"
    echo "$want" >"$stamp"
  fi
}

