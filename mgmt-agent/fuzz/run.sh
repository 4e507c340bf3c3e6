#!/usr/bin/env bash
# Runs every keel-mgmt fuzz target for SECONDS seconds each (default 30);
# see scripts/fuzz.sh, which runs every fuzz crate's targets.
#
#   mgmt-agent/fuzz/run.sh [SECONDS]
exec "$(dirname "${BASH_SOURCE[0]}")/../../scripts/fuzz.sh" "${1:-30}" mgmt-agent/fuzz
