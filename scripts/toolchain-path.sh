# Sourced by the make scripts: puts the Rust and Go toolchains on PATH when a
# non-interactive shell (CI, make) did not read the profile that normally does.
for d in "$HOME/.cargo/bin" /usr/local/go/bin "$HOME/go/bin"; do
  if [ -d "$d" ]; then
    case ":$PATH:" in *":$d:"*) ;; *) PATH="$d:$PATH" ;; esac
  fi
done
export PATH
