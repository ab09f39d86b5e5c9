#!/usr/bin/env bash
# Stop both services by their pid files; succeeds when they are not running.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$here/opensearch.sh" down
bash "$here/postgres.sh" down
