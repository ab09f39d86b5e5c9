#!/usr/bin/env bash
# Stop the services by their pid files (Kafka too, if it runs); succeeds when they are not running.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$here/kafka.sh" down
bash "$here/opensearch.sh" down
bash "$here/postgres.sh" down
