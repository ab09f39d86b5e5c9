#!/usr/bin/env bash
# Bring up the real PostgreSQL and OpenSearch that demo, tests and benchmarks use; idempotent.
# KAFKA=1 (`make services KAFKA=1`) starts the Kafka broker of `queue: {type: kafka}` too.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
t0=$SECONDS
bash "$here/postgres.sh" up
bash "$here/opensearch.sh" up
if [[ "${KAFKA:-}" == 1 ]]; then bash "$here/kafka.sh" up; fi
echo "services: ready in $((SECONDS - t0))s"
echo "  FLUSSO_PG_DSN=postgresql://postgres:***@127.0.0.1:${FLUSSO_PG_PORT:-5432}/postgres (password: postgres)"
echo "  OPENSEARCH_URL=http://127.0.0.1:${OPENSEARCH_PORT:-9200}"
if [[ "${KAFKA:-}" == 1 ]]; then echo "  KAFKA_BOOTSTRAP=127.0.0.1:${KAFKA_PORT:-9092}"; fi
