# Shared set-up for scripts/serve and scripts/test; source it, don't run it.
# Every step is idempotent and skips what is already there. Tools live outside the repo, in
# ${PATCHWORK_CACHE:-$HOME/.cache/patchwork}/tools, and nothing is ever downloaded by Trunk.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PATCHWORK_CACHE="${PATCHWORK_CACHE:-$HOME/.cache/patchwork}"
TOOLS="$PATCHWORK_CACHE/tools"
TRUNK_VERSION=0.21.14
BINARYEN_VERSION=132
export PATH="$TOOLS/bin:$HOME/.cargo/bin:$PATH"
cd "$ROOT"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }

# The wasm-bindgen version that Cargo.lock pins; the CLI must match it exactly.
wasm_bindgen_version() {
    awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

ensure_rust() {
    command -v rustup >/dev/null || { echo "rustup not found: install it from rustup.rs first" >&2; exit 1; }
    if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        note "wasm32-unknown-unknown: installed"
    else
        rustup target add wasm32-unknown-unknown
    fi
}

ensure_components() {
    local have
    have="$(rustup component list --installed)"
    for c in rustfmt clippy; do
        if grep -q "^$c" <<<"$have"; then note "$c: installed"; else rustup component add "$c"; fi
    done
}

# Tools are installed without their release profiles' fat LTO and single codegen unit, which
# cuts a cold build on two cores a good deal and changes nothing that matters for a build tool.
fast_install() {
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 cargo install "$@"
}

ensure_trunk() {
    if [[ "$(trunk --version 2>/dev/null)" == "trunk $TRUNK_VERSION" ]]; then
        note "trunk $TRUNK_VERSION: installed"
    else
        step "installing trunk $TRUNK_VERSION into $TOOLS (several minutes, once)"
        fast_install trunk --version "$TRUNK_VERSION" --locked --root "$TOOLS"
    fi
}

ensure_wasm_bindgen() {
    local v
    v="$(wasm_bindgen_version)"
    [[ -n "$v" ]] || { echo "wasm-bindgen is not in Cargo.lock" >&2; exit 1; }
    if [[ "$(wasm-bindgen --version 2>/dev/null)" == "wasm-bindgen $v" ]] &&
        [[ "$(wasm-bindgen-test-runner --version 2>/dev/null)" == *" $v"* ]]; then
        note "wasm-bindgen-cli $v: installed"
    else
        step "installing wasm-bindgen-cli $v into $TOOLS (a few minutes, once)"
        fast_install wasm-bindgen-cli --version "$v" --root "$TOOLS" --force
    fi
    # Trunk would otherwise look for this version in app/Cargo.lock, which does not exist.
    export TRUNK_TOOLS_WASM_BINDGEN="$v"
}

# wasm-opt from npm's binaryen (Debian's binaryen is too old for current wasm-bindgen output).
# Without npm, wasm-opt is off: a pass-through stands in for it, and the app ships unoptimised.
ensure_wasm_opt() {
    local npm_bin="$TOOLS/npm/node_modules/.bin/wasm-opt"
    if [[ "$("$npm_bin" --version 2>/dev/null)" == "wasm-opt version $BINARYEN_VERSION "* ]]; then
        note "wasm-opt (binaryen $BINARYEN_VERSION): installed"
    elif command -v "${NPM:-npm}" >/dev/null; then
        step "installing binaryen@$BINARYEN_VERSION (wasm-opt) into $TOOLS/npm"
        "${NPM:-npm}" install --prefix "$TOOLS/npm" --no-audit --no-fund --no-save "binaryen@$BINARYEN_VERSION"
    fi
    if [[ -x "$npm_bin" ]]; then
        export PATH="$TOOLS/npm/node_modules/.bin:$PATH"
        export TRUNK_TOOLS_WASM_OPT="version_$BINARYEN_VERSION"
    else
        note "npm not found: wasm-opt is off (install npm for a smaller build)"
        mkdir -p "$TOOLS/wasm-opt-off"
        cat >"$TOOLS/wasm-opt-off/wasm-opt" <<'SH'
#!/bin/sh
# Stands in for wasm-opt when none is installed: copies the input to --output unchanged.
[ "$1" = "--version" ] && { echo "wasm-opt version off (pass-through)"; exit 0; }
out=""; in=""
for a in "$@"; do
    case "$a" in --output=*) out="${a#--output=}" ;; -*) ;; *) in="$a" ;; esac
done
exec cp "$in" "$out"
SH
        chmod +x "$TOOLS/wasm-opt-off/wasm-opt"
        export PATH="$TOOLS/wasm-opt-off:$PATH"
        export TRUNK_TOOLS_WASM_OPT="version_off"
    fi
}
