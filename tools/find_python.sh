#!/usr/bin/env bash
# Print the path of the first Python interpreter found for the versions given (e.g. 3.13 3.12),
# looking on PATH and in pyenv's versions; print nothing when none is found.
for version in "$@"; do
  for candidate in "$(command -v "python$version" 2>/dev/null)" \
                   "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/python"$version"; do
    if [ -x "$candidate" ] && "$candidate" -c 'import venv, ensurepip' 2>/dev/null; then
      echo "$candidate"
      exit 0
    fi
  done
done
